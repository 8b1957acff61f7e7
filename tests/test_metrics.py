"""Metrics: every fit with a run directory writes its records to metrics.jsonl as it goes (the
search's steps: tests/test_search.py); TensorBoard only where it is installed."""

import importlib.util
import json

import numpy as np
import pytest

from theorycraft._metrics import Metrics, read_metrics
from theorycraft.inference import FitConfig, fit

from conftest import captured, recorded_target, theory_for


def test_fit_writes_its_losses_to_metrics_jsonl(tmp_path):
    theory = theory_for(recorded_target(tmp_path), "net: {kind: mlp, from: x, hidden: [8], predicts: z}\n"
                                                   "lin: {kind: linear, from: x, predicts: y}\n")
    acts = captured(tmp_path, theory)
    out = tmp_path / "run"
    fitted = fit(theory, acts, FitConfig(max_steps=60, batch_size=64, eval_every=20, progress=False), out_dir=out)
    records = read_metrics(out)
    assert [r["event"] for r in records][0] == "fit_start" and records[-1]["event"] == "fit_done"
    (ridge,) = [r for r in records if r["event"] == "closed_form"]
    assert ridge["site"] == "y" and ridge["ridge_strength"] == fitted.fit_info["closed_form"]["y"]["ridge_strength"]
    adam = [r for r in records if r["event"] == "fit"]
    assert [r["step"] for r in adam] == [20, 40, 60] and all(r["sites"] == ["z"] for r in adam)
    assert all(np.isfinite(r["loss"]) and r["learning_rate"] > 0 for r in adam)
    validation = [r["validation_loss"] for r in adam]
    assert [r["best_validation_loss"] for r in adam] == list(np.minimum.accumulate(validation))
    assert adam[-1]["best_validation_loss"] == fitted.fit_info["gradient"]["best_validation_loss"]


def test_no_directory_writes_nothing_and_a_torn_line_is_skipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Metrics().write("fit", 1, loss=1.0)
    assert not list(tmp_path.iterdir())
    metrics = Metrics(tmp_path, tensorboard=False)
    metrics.write("search", 0, bits_total=10.5, action="start")
    with open(tmp_path / "metrics.jsonl", "a") as file:
        file.write('{"event": "search", "st')  # a job killed mid-line
    assert [(r["event"], r["bits_total"]) for r in read_metrics(tmp_path)] == [("search", 10.5)]
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["action"] == "start"


def test_numbers_go_to_a_summary_writer_where_tensorboard_is_found(tmp_path, monkeypatch):
    """The wiring, with a stand-in SummaryWriter (tensorboard itself need not be installed)."""
    import sys
    import types

    scalars = []

    class Writer:
        def __init__(self, logdir):
            scalars.append(("dir", logdir))

        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def flush(self):
            scalars.append("flush")

    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = Writer
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "tensorboard" else found(name, *a))
    Metrics(tmp_path).write("fit", 20, stage=0, sites=["z"], loss=0.25, validation_loss=float("nan"), done=True)
    assert scalars == [("dir", str(tmp_path / "tensorboard")), ("fit/stage", 0, 20), ("fit/loss", 0.25, 20), "flush"]
    assert Metrics(tmp_path, tensorboard=False)._board is None and len(scalars) == 4  # asked not to: not opened
    monkeypatch.setenv("THEORYCRAFT_TENSORBOARD", "0")
    assert Metrics(tmp_path)._board is None and len(scalars) == 4


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_gets_the_numbers_where_installed(tmp_path):
    Metrics(tmp_path).write("fit", 3, loss=0.5, sites=["z"])
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
