"""The CLI end to end: sites, capture and infer on a bundled target, and their user errors."""

import json
import re

from theorycraft.cli import main
from theorycraft.inference import FittedTheory


def test_sites_lists_hooks_with_shapes(capsys):
    assert main(["sites", "builtin:superposition"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^hook_hidden\s+\[5\]$", out, re.M) and re.search(r"^hook_output\s+\[20\]$", out, re.M)
    assert re.search(r"^hook_hidden:input\s+\[5\]$", out, re.M)


def test_capture_then_reuse(tmp_path, capsys):
    args = ["capture", "builtin:superposition", "--sites", "hook_hidden", "--n", "500", "--cache", str(tmp_path)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "captured 500 examples of 1 sites (float32)" in first
    assert main(args) == 0
    assert capsys.readouterr().out == first  # the same capture, found in the store


def test_capture_errors_exit_1_without_traceback(tmp_path, capsys):
    assert main(["capture", "builtin:superposition", "--sites", "hook_hiden", "--cache", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown site 'hook_hiden'") and "did you mean 'hook_hidden'" in err
    assert main(["capture", "builtin:nope", "--sites", "x", "--cache", str(tmp_path)]) == 1
    assert main(["capture", "torch:os:getcwd", "--sites", "x", "--cache", str(tmp_path)]) == 1
    assert "--trust-code" in capsys.readouterr().err


def test_infer_writes_an_artifact_and_prints_the_table(tmp_path, capsys, at_root):
    out = tmp_path / "run"
    code = main(["infer", "examples/superposition.yaml", "--n", "3000", "--max-steps", "100", "--out", str(out),
                 "--cache", str(tmp_path / "cache")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "R2 train" in printed and "teacher-forced [" in printed and "test coverage " in printed and "over h, out (given: x)" in printed
    card = json.loads((out / "scorecard.json").read_text())
    assert card["sites"]["h"]["r2_test"] > 0.999  # h = W x exactly: the closed form finds it
    assert card["covered"] == ["h", "out"] and card["size"]["bits"] is None  # bits: theorycraft score
    assert (out / "log.txt").read_text().startswith("site h: exact ridge over embed")
    fitted = FittedTheory.load(out)
    assert fitted.fit_info == card["fit"] and set(fitted.params) == {"embed", "readout"}

    # score the artifact: bits, MDL and splicing land in its scorecard and are printed
    assert main(["score", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "MDL on" in printed and "splice out (" in printed
    scored = json.loads((out / "scorecard.json").read_text())
    assert scored["sites"] == card["sites"]  # fidelity is the same, computed again
    parts = sum(scored["size"][k] for k in ("bits_spec", "bits_params", "bits_latents"))
    assert abs(scored["size"]["bits"] - parts) <= 2  # each part rounded on its own
    assert scored["mdl"]["compression"] > 1 and scored["splice"]["h"]["loss_recovered"] > 0.99


def test_infer_of_an_invalid_theory_exits_1(at_root, capsys):
    assert main(["infer", "tests/data/broken/cycles.yaml"]) == 1
    assert "cycle in variables" in capsys.readouterr().err


def test_score_of_a_directory_that_is_no_artifact_exits_1(tmp_path, capsys):
    assert main(["score", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: not a fitted theory directory")


def test_bench_exits_1_when_its_validity_check_fails(tmp_path, capsys, monkeypatch):
    from theorycraft.benchmarks import coverage

    def broken_bench(out, **_):
        (tmp_path / "results.md").write_text("### builtin:t\n")
        return coverage.BenchResult(True, 1.0, "here", (), {}, ("sae is not beaten by ref",))

    monkeypatch.setattr(coverage, "run_bench", broken_bench)
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "validity: sae is not beaten by ref" in captured.out and "validity check failed" in captured.err
