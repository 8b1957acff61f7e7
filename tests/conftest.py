import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml"))
BROKEN = sorted((ROOT / "tests" / "data" / "broken").glob("*.yaml"))


# The files whose tests take longest (the benchmark's fixture, the killed commands), slowest first:
# collected first, so that `make test` (-n 2 --dist loadfile --no-loadscope-reorder: files handed
# out in this order) starts each at once on its own worker and the other files fill in around
# them. xdist's own order (files with the most tests first) handed them out last, to end the suite.
SLOWEST_FIRST = ("test_bench.py", "test_crash.py", "test_rasp_suite.py")


def pytest_collection_modifyitems(items):
    rank = {name: k for k, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the others keep their order


@pytest.fixture
def at_root(monkeypatch):
    """Run from the repository root, so paths in messages read as a user would type them."""
    monkeypatch.chdir(ROOT)
    return ROOT


def relative(path: Path) -> str:
    return os.path.relpath(path, ROOT)


# --- synthetic targets: recorded activations with known structure --------------------------------

def recorded_target(tmp_path, n=600, seed=0, noise=0.05, y_width=4):
    r = np.random.default_rng(seed)
    tokens = r.integers(0, 7, size=(n, 3)).astype(np.int32)
    x = r.normal(size=(n, 6)).astype(np.float32)
    w = r.normal(size=(6, y_width))
    y = (x @ w + 1.5 + noise * r.normal(size=(n, y_width))).astype(np.float32)
    angle = 2 * np.pi * tokens[:, :2] / 7
    u = r.normal(size=(7, 3)).astype(np.float32)[tokens[:, 0]]  # exactly a table of token[0]
    z = np.stack([np.cos(angle[:, 0]) + 2 * np.sin(angle[:, 1]), np.tanh(x[:, 0] * x[:, 1])], 1).astype(np.float32)
    from theorycraft.targets import write_recording

    return write_recording(tmp_path / "recorded", tokens, {"x": x, "y": y, "z": z, "u": u})


def per_position_target(tmp_path, n=400, t=5):
    """A site over every position: h = F[token[i]] + G[token[i - 1]], with G[-1] for the first."""
    r = np.random.default_rng(2)
    tokens = r.integers(0, 7, size=(n, t))
    prev = np.concatenate([np.full((n, 1), 7), tokens[:, :-1]], axis=1)  # row 7: before the start
    h = r.normal(size=(7, 2))[tokens] + r.normal(size=(8, 2))[prev]
    from theorycraft.targets import write_recording

    return write_recording(tmp_path / "positions", tokens.astype(np.int32), {"h": h.astype(np.float32)})


def theory_for(directory, components, extra_sites="", sites="x: x, y: y, z: z"):
    """A theory of the synthetic target; the sites its components read but do not predict are
    declared as its inputs (on a last line, so the components keep their line numbers)."""
    import yaml

    from theorycraft.spec import declare_inputs, parse_theory

    text = textwrap.dedent(f"""\
        theory: synthetic
        target: activations:{directory}
        sites: {{{sites}{extra_sites}}}
        variables: {{a: 'token[0]', b: 'token[1]'}}
        components:
        """) + textwrap.indent(textwrap.dedent(components), "  ")
    inputs = declare_inputs(yaml.safe_load(text)).get("inputs")
    return parse_theory(text + (f"\ninputs: [{', '.join(inputs)}]\n" if inputs else ""), path="synthetic.yaml")


def captured(tmp_path, theory):
    from theorycraft.store import capture
    from theorycraft.targets import load_target

    return capture(load_target(theory.target), [s.hook for s in theory.sites.values()],
                   cache_dir=tmp_path / "cache", progress=False)


def r2_test(fitted, acts, site):
    """A fitted theory's test R² at one site, as the scorer computes it."""
    from theorycraft.scoring import score

    return score(fitted, acts, bits=False).sites[site].r2_test
