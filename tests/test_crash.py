"""Crash consistency (issue 15): ``theorycraft capture`` and ``theorycraft infer``, killed with
SIGKILL at random points and run again, end exactly where a run never killed ends (the store byte
for byte; the artifact's tensors byte for byte, the rest field for field but the seconds it took).
A handful of trials; ``benchmarks/crash_consistency.py --trials N`` runs many more."""

import numpy as np
import pytest

from theorycraft.benchmarks import crash_consistency as crash

pytestmark = pytest.mark.skipif(not hasattr(crash.os, "killpg"), reason="needs POSIX process groups")


def test_a_killed_capture_reruns_to_the_same_store_byte_for_byte(tmp_path):
    summary = crash.capture_trials(tmp_path, 2, np.random.default_rng(1), log=lambda m: None,
                                   argv=[*crash.CAPTURE[:-4], "--n", "1500", "--batch-size", "40"])
    assert summary.trials == summary.identical == 2, str(summary)


def test_a_killed_infer_resumes_to_the_same_fit(tmp_path):
    summary = crash.infer_trials(tmp_path, 2, np.random.default_rng(1), log=lambda m: None,
                                 argv=[crash.INFER[0], "--n", "600", "--max-steps", "400"])
    assert summary.trials == summary.identical == 2, str(summary)
    assert any("resumed from step" in state for state in summary.states), str(summary)  # the odd trial resumed
