"""Scale-out: a fit on a 2 x 2 (data x model) mesh of forced CPU devices, and on two processes
joined by jax.distributed, gives the fit of one device, one process."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from theorycraft.inference import FitConfig, fit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def table_target(directory, n=512, keys=64, width=32):
    """y = T[token[0]] + tanh(x) @ W: a 64-row table (2,048 numbers: large enough to shard) and a
    part that only the mlp beside it can fit, so the table is fitted by Adam, not in closed form."""
    r = np.random.default_rng(3)
    tokens = r.integers(0, keys, size=(n, 2)).astype(np.int32)
    x = r.normal(size=(n, 4)).astype(np.float32)
    y = r.normal(size=(keys, width))[tokens[:, 0]] + np.tanh(x) @ r.normal(size=(4, width))
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "inputs.npy", tokens)
    np.save(directory / "x.npy", x)
    np.save(directory / "y.npy", y.astype(np.float32))
    (directory / "manifest.json").write_text(json.dumps({"sites": ["x", "y"]}))
    return directory


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
