"""Scale-out: a fit on a 2 x 2 (data x model) mesh of forced CPU devices, and on two processes
joined by jax.distributed, gives the fit of one device, one process."""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import asdict

import jax
import numpy as np
import pytest

from theorycraft.inference import FitConfig, fit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def table_target(directory, n=512, keys=64, width=32):
    """y = T[token[0]] + tanh(x) @ W: a 64-row table (2,048 numbers: large enough to shard) and a
    part that only the mlp beside it can fit, so the table is fitted by Adam, not in closed form."""
    r = np.random.default_rng(3)
    tokens = r.integers(0, keys, size=(n, 2)).astype(np.int32)
    x = r.normal(size=(n, 4)).astype(np.float32)
    y = r.normal(size=(keys, width))[tokens[:, 0]] + np.tanh(x) @ r.normal(size=(4, width))
    from theorycraft.targets import write_recording

    return write_recording(directory, tokens, {"x": x, "y": y.astype(np.float32)})


def table_theory(directory):
    from theorycraft.spec import parse_theory

    return parse_theory(textwrap.dedent(f"""\
        theory: sharded-table
        target: activations:{directory}
        sites: {{x: x, y: y}}
        inputs: [x]
        variables: {{a: 'token[0]'}}
        components:
          table: {{kind: lookup, of: a, size: 64, predicts: y}}
          net: {{kind: mlp, from: x, hidden: [8], predicts: y}}
        """), path="sharded.yaml")


CONFIG = dict(max_steps=40, batch_size=64, eval_every=10, progress=False, learning_rate=3e-2)

FOUR_DEVICES = """
import json, sys
from pathlib import Path
import numpy as np, jax
sys.path.insert(0, {tests!r})
from test_distributed import table_theory, CONFIG
from theorycraft.inference import fit, FitConfig
from theorycraft.store import ActivationSet
theory = table_theory(Path({tmp!r}) / "target")
fitted = fit(theory, ActivationSet({acts!r}), FitConfig(model_shards=2, **CONFIG))
info = fitted.fit_info["gradient"]
print(json.dumps({{"devices": info["devices"], "mesh": info["mesh"], "sharded": info["sharded_on_model"],
                  "table": np.asarray(fitted.params["table"]["table"]).tolist()}}))
"""


def test_a_table_sharded_two_by_two_fits_like_one_device(tmp_path):
    from conftest import captured

    theory = table_theory(table_target(tmp_path / "target"))
    acts = captured(tmp_path, theory)  # the capture both fits read
    one = fit(theory, acts, FitConfig(**CONFIG))
    assert one.fit_info["gradient"] is not None  # fitted by Adam on the mesh, not in closed form
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    code = FOUR_DEVICES.format(tests=os.path.join(ROOT, "tests"), tmp=str(tmp_path), acts=str(acts.directory))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    four = json.loads(out.stdout.strip().splitlines()[-1])
    assert four["devices"] == 4 and four["mesh"] == {"data": 2, "model": 2}
    assert four["sharded"] == {"table/table": 0}  # the table's 64 rows, split over the model axis
    table = np.asarray(one.params["table"]["table"])
    assert np.abs(table).max() > 0.1  # it was fitted
    np.testing.assert_allclose(four["table"], table, rtol=1e-4, atol=1e-5)


def test_two_processes_fit_and_score_like_one(tmp_path):
    """`infer --processes 2`: two workers on localhost (gloo), each reading its own shards of the
    capture for the sums; the exact solves (ridge, sums of tables) match one process, Adam takes
    one process's steps (each process feeds its slice of every step) and stops where it does,
    and the scorecard, summed over both processes' shards, is one process's."""
    import theorycraft as tc
    from conftest import recorded_target
    from theorycraft.cli import main
    from theorycraft.inference import FittedTheory
    from theorycraft.scoring import Scorecard
    from theorycraft.spec import load_theory
    from theorycraft.store import capture
    from theorycraft.targets import load_target

    path = tmp_path / "theory.yaml"
    path.write_text(textwrap.dedent(f"""\
        theory: two-processes
        target: activations:{recorded_target(tmp_path)}
        sites: {{x: x, y: y, z: z, u: u}}
        inputs: [x]
        variables: {{a: 'token[0]', b: 'token[1]'}}
        components:
          lin: {{kind: linear, from: x, predicts: y}}
          by_a: {{kind: lookup, of: a, size: 7, predicts: z}}
          by_b: {{kind: lookup, of: b, size: 7, predicts: z}}
          net: {{kind: mlp, from: a, hidden: [8], predicts: u}}
        """))
    theory = load_theory(str(path))
    acts = capture(load_target(theory.target), [s.hook for s in theory.sites.values()], cache_dir=tmp_path / "cache",
                   progress=False, shard_rows=100)  # six shards: three for each process
    flags = ["--max-steps", "60", "--batch-size", "64", "--lr", "0.03"]
    assert main(["infer", str(path), "--processes", "2", "--cache", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "two"), *flags]) == 0
    one = tc.infer(theory, acts, max_steps=60, batch_size=64, learning_rate=0.03, progress=False, log=lambda m: None)
    two, card = FittedTheory.load(tmp_path / "two"), Scorecard.load(tmp_path / "two")
    assert two.fit_info["data"] | {"capture": None, "cache": None} == {"capture": None, "cache": None, "n": 600,
                                                                    "processes": 2, "examples_read": 300,
                                                                    "inputs": {"dtype": "int32", "shape": [3]}}
    assert two.fit_info["gradient"]["devices"] == 2
    for key in ("steps", "best_validation_loss"):  # the same steps, stopped at the same one
        assert two.fit_info["gradient"][key] == pytest.approx(one.fitted.fit_info["gradient"][key], rel=1e-5)
    for name in ("lin", "by_a", "by_b"):  # exact: sums over processes, then the same solve
        for leaf, value in one.fitted.params[name].items():
            np.testing.assert_allclose(two.params[name][leaf], value, rtol=1e-5, atol=1e-6)
    net = jax.tree_util.tree_leaves(one.fitted.params["net"])
    assert np.abs(net[0]).max() > 0.1  # Adam moved it
    for a, b in zip(jax.tree_util.tree_leaves(two.params["net"]), net, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert card.sites["u"].r2_test > 0.2
    assert set(card.sites) == set(one.scorecard.sites) == {"y", "z", "u"}
    for site in card.sites:  # every figure of the scorecard, summed over the two processes' shards
        two_site, one_site = asdict(card.sites[site]), asdict(one.scorecard.sites[site])
        figures = [k for k, v in one_site.items() if not isinstance(v, tuple)]  # intervals: a bootstrap's draws
        assert {k: two_site[k] for k in figures} == pytest.approx({k: one_site[k] for k in figures}, abs=1e-5), site
        for k in set(one_site) - set(figures):
            assert two_site[k] == pytest.approx(one_site[k], abs=5e-3), (site, k)
    for field in ("coverage", "coverage_validation", "coverage_free", "coverage_validation_free"):
        assert getattr(card, field) == pytest.approx(getattr(one.scorecard, field), abs=1e-5), field
    assert card.size == one.scorecard.size


STREAMED = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from theorycraft.inference import FitConfig, _distributed, _stream, fit
_distributed.initialize(_distributed.cluster_from_environment())
_stream.RESIDENT_BYTES = {resident}
from test_distributed import mlp_theory, STREAMED_CONFIG
from theorycraft.scoring._fidelity import examples_of, squared_errors, summed
from theorycraft.store import ActivationSet
acts = ActivationSet({acts!r})
fitted = fit(mlp_theory({target!r}), acts, FitConfig(**STREAMED_CONFIG))
examples = examples_of(fitted, acts)
print("result:", json.dumps({{"info": fitted.fit_info["gradient"], "w": np.asarray(fitted.params["net"]["layer0"]["w"]).tolist(),
                             "scored": examples.own["test"].tolist(), "sst": examples.sst["test"]["y"],
                             "sse": summed(squared_errors(fitted, examples.data, examples.own["test"]))["y"]}}))
"""
STREAMED_CONFIG = dict(max_steps=40, batch_size=32, eval_every=5, patience=1, progress=False, learning_rate=0.1)


def mlp_theory(target):
    from theorycraft.spec import parse_theory

    return parse_theory(f"theory: streamed\ntarget: activations:{target}\nsites: {{x: x, y: y}}\ninputs: [x]\n"
                        "components: {net: {kind: mlp, from: x, hidden: [8], predicts: y}}\n", path="streamed.yaml")


def test_two_processes_stream_the_steps_of_one(tmp_path, monkeypatch):
    """When the split does not fit in memory (a tiny RESIDENT_BYTES: shuffle windows of two steps,
    the validation loss summed window by window), two processes, each computing only its slices
    of a window's steps, take one process's steps and stop early where it does; each scores only
    its own test examples, and the sums are one process's."""
    from conftest import recorded_target
    from theorycraft._processes import _wait, free_port
    from theorycraft.inference import _stream
    from theorycraft.scoring._fidelity import examples_of, squared_errors
    from theorycraft.store import capture
    from theorycraft.targets import load_target

    target = recorded_target(tmp_path)
    theory = mlp_theory(target)
    acts = capture(load_target(theory.target), ["x", "y"], cache_dir=tmp_path / "cache", progress=False, shard_rows=100)
    monkeypatch.setattr(_stream, "RESIDENT_BYTES", 3000)
    said = []
    one = fit(theory, acts, FitConfig(**STREAMED_CONFIG), log=said.append)
    assert any("shuffled windows of 64" in line for line in said)  # two steps of 32 a window
    assert one.fit_info["gradient"]["steps"] < 40  # stopped early
    code = STREAMED.format(tests=os.path.join(ROOT, "tests"), resident=3000, target=str(target),
                           acts=str(acts.directory))
    port = free_port()
    outs = [(tmp_path / f"out{k}.txt").open("w+") for k in range(2)]
    workers = [subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, THEORYCRAFT_COORDINATOR=f"localhost:{port}",
                                         THEORYCRAFT_NUM_PROCESSES="2", THEORYCRAFT_PROCESS_ID=str(k)))
               for k, out in enumerate(outs)]
    failed = _wait(workers)
    for w in workers:  # one failed: the other would wait for it in a collective
        if w.poll() is None:
            w.kill()
            w.wait()
    said = [out.seek(0) or out.read() for out in outs]
    assert failed is None, said[failed][-3000:]
    zero, two = (json.loads(next(line for line in out.splitlines() if line.startswith("result: "))[len("result: "):])
                 for out in said)
    assert two["info"]["devices"] == 2 and zero == two | {"scored": zero["scored"]}  # every process alike
    scored = [set(zero["scored"]), set(two["scored"])]
    assert not scored[0] & scored[1] and scored[0] | scored[1] == set(acts.split("test").tolist())  # split between them
    test = acts.split("test")  # one process's test squared errors and spread, from the scorer's own functions
    assert two["sse"] == pytest.approx(squared_errors(one, examples_of(one, acts).data, test)["y"], rel=1e-5)
    assert two["sst"] == pytest.approx(examples_of(one, acts).sst["test"]["y"], rel=1e-6)
    for key in ("steps", "best_validation_loss"):
        assert two["info"][key] == pytest.approx(one.fit_info["gradient"][key], rel=1e-5)
    w = np.asarray(one.params["net"]["layer0"]["w"])
    np.testing.assert_allclose(two["w"], w, rtol=1e-4, atol=1e-5)


def test_capture_parts_merge_by_key(tmp_path):
    """`capture --part K/N` records every N-th shard into a partial store; the whole capture of
    the same key adopts the parts' shards and records only what they lack, to the same arrays."""
    from conftest import recorded_target
    from theorycraft.store import capture
    from theorycraft.targets import load_target

    target = load_target(f"activations:{recorded_target(tmp_path)}")
    recorded = []
    record = target.record
    target.record = lambda data, rows, hooks: recorded.append(len(rows)) or record(data, rows, hooks)

    def take(cache, **kw):
        return capture(target, ["x", "z"], cache_dir=tmp_path / cache, progress=False, shard_rows=100, batch_size=50, **kw)

    whole = take("direct")
    recorded.clear()
    part = take("parts", part=(1, 3))  # shards 1 and 4 of 6
    assert sum(recorded) == 200 and part.name.endswith(".part-1-of-3") and not (part / "manifest.json").exists()
    take("parts", part=(0, 3))  # shards 0 and 3; part 2 never runs
    recorded.clear()
    merged = take("parts")
    assert sum(recorded) == 200  # only shards 2 and 5, which no part recorded
    assert not list((tmp_path / "parts").glob("*.part-*"))
    for site in ("x", "z"):
        np.testing.assert_array_equal(merged.site(site), whole.site(site))
    merged.verify()


def test_the_cluster_comes_from_the_environment():
    from theorycraft.errors import ArgumentError
    from theorycraft.inference._distributed import Cluster, cluster_from_environment

    assert cluster_from_environment({"SLURM_NTASKS": "4", "SLURM_PROCID": "1"}) is None  # no coordinator: alone
    ours = {"THEORYCRAFT_COORDINATOR": "node0:12355", "THEORYCRAFT_NUM_PROCESSES": "4", "THEORYCRAFT_PROCESS_ID": "3"}
    assert cluster_from_environment(ours) == Cluster("node0:12355", 4, 3)
    slurm = {"THEORYCRAFT_COORDINATOR": "node0:12355", "SLURM_NTASKS": "8", "SLURM_PROCID": "5"}
    assert cluster_from_environment(slurm) == Cluster("node0:12355", 8, 5)
    indexed = {"THEORYCRAFT_COORDINATOR": "fit-0.fit:12355", "THEORYCRAFT_NUM_PROCESSES": "2", "JOB_COMPLETION_INDEX": "1"}
    assert cluster_from_environment(indexed) == Cluster("fit-0.fit:12355", 2, 1)
    for bad in ({"THEORYCRAFT_NUM_PROCESSES": "two", "THEORYCRAFT_PROCESS_ID": "0"},
                {"THEORYCRAFT_NUM_PROCESSES": "2", "THEORYCRAFT_PROCESS_ID": "2"}):
        with pytest.raises(ArgumentError, match="THEORYCRAFT_"):
            cluster_from_environment({"THEORYCRAFT_COORDINATOR": "node0:1"} | bad)
