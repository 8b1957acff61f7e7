"""Sizes (issue 15): the plan prices a theory before anything is allocated. A theory whose fit
would need more memory than the machine has free (or than --max-memory allows) is refused at
file:line:col, naming the component, its size and what would fit; k > width, rank > min(in,
out) and a site position outside the sequence are plan errors. Each refusal is timed, and the
process's peak memory is read around it: nothing is allocated."""

import re
import time

import pytest

from theorycraft.cli import main
from theorycraft.inference import FitConfig, fit
from theorycraft.spec import TheoryError, parse_theory

from conftest import captured, per_position_target, recorded_target, theory_for

G = 10 ** 7  # the largest integer a theory file may state (larger ones are refused by the loader)
M = 10 ** 6
WAVES = list(range(1, 113))  # 224 features a block
HOSTILE = [  # (components, where, what the message says)
    ("t: {kind: lookup, of: [a, b], size: [100000, 100000], predicts: y}\n", "6:3",
     r"lookup component 't' needs [\d.]+ TB to fit \(40,000,000,000 parameters x 20 bytes .*free on this machine"),
    (f"w: {{kind: linear, from: x, width: {G}}}\nr: {{kind: linear, from: x, predicts: y}}\n", "6:3",
     r"linear component 'w' needs [\d.]+ [GT]B to fit \(70,000,000 parameters"),
    (f"d: {{kind: dictionary, from: y, width: {G}, k: 8, predicts: y}}\n", "6:3",
     r"dictionary component 'd' needs [\d.]+ [GT]B to fit \(90,000,004 parameters"),
    (f"m: {{kind: mlp, from: x, hidden: [{G}], predicts: y}}\n", "6:3",
     r"mlp component 'm' needs [\d.]+ [GT]B to fit \(110,000,004 parameters"),
    (f"l: {{kind: linear, from: x, rank: {M}, predicts: y}}\n", "6:36",
     r"expected a rank of at most 4 \(the smaller of its 6 input features and 4 outputs\), found 1000000"),
    (f"d: {{kind: dictionary, from: y, width: 64, k: {M}, predicts: y}}\n", "6:48",
     r"expected k \(active latents per example\) of at most its width 64, found 1000000"),
    (f"f: {{kind: fourier, of: [a], modulus: 7, frequencies: {WAVES}}}\n"
     f"g: {{kind: fourier, of: [b], modulus: 7, frequencies: {WAVES}}}\n"
     f"h: {{kind: fourier, of: [a], modulus: 7, frequencies: {WAVES}}}\n"
     "p: {kind: product, of: [f, g, h]}\nr: {kind: linear, from: p, predicts: y}\n", "9:3",
     r"product component 'p' needs [\d.]+ GB to fit \(45.0 MB of features per example x \d+ examples held at once\)"),
]


def _peak_kb() -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read())[1])


def _refused(theory, acts, config=FitConfig(progress=False)) -> tuple[TheoryError, float, int]:
    """The refusal, its seconds, and how far it raised the process's peak memory (KB)."""
    try:
        open("/proc/self/clear_refs", "w").write("5")  # the peak starts again from here
    except OSError:
        pass
    before, start = _peak_kb(), time.perf_counter()
    with pytest.raises(TheoryError) as info:
        fit(theory, acts, config)
    return info.value, time.perf_counter() - start, _peak_kb() - before


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The synthetic target, captured, and a fit of a small theory (jax and its backend warm)."""
    tmp = tmp_path_factory.mktemp("sizes")
    directory = recorded_target(tmp)
    theory = theory_for(directory, "r: {kind: linear, from: x, predicts: y}\n")
    acts = captured(tmp, theory)
    fit(theory, acts, FitConfig(progress=False))
    return tmp, directory, acts


@pytest.mark.parametrize("components, where, message", HOSTILE, ids=["lookup size", "linear width",
                         "dictionary width", "mlp hidden", "rank", "k", "product of waves"])
def test_a_theory_too_big_to_fit_is_refused_before_anything_is_allocated(recorded, components, where, message):
    _, directory, acts = recorded
    theory = theory_for(directory, components)
    # widths the loader lets through (at most 10,000,000) are judged against a 1 GB budget
    budget = None if "on this machine" in message else "1G"
    error, seconds, peak = _refused(theory, acts, FitConfig(progress=False, max_memory=budget))
    text = str(error)
    assert re.search(rf"^synthetic.yaml:{where}: error: {message}", text, re.M), text
    assert "Traceback" not in text
    assert seconds < 0.5, f"refused in {seconds:.2f} s"
    assert peak < 20_000, f"the peak memory rose by {peak} KB"


def test_a_position_outside_the_sequence_is_refused_at_the_site(tmp_path):
    directory = per_position_target(tmp_path)
    for position, expected in ((M, "expected a position from -5 to 4 (the hook records 5 positions, shape "
                                    "[5, 2]), found position 1000000"), (-6, "found position -6")):
        theory = parse_theory(f"theory: p\ntarget: activations:{directory}\nsites:\n  h: {{hook: h, position: "
                              f"{position}}}\nvariables: {{a: 'token[0]'}}\ncomponents:\n"
                              f"  t: {{kind: lookup, of: [a], size: [7], predicts: h}}\n", path="p.yaml")
        acts = captured(tmp_path, theory)
        error, seconds, _ = _refused(theory, acts)
        assert str(error).startswith("p.yaml:4:26: error: site 'h': expected a position from -5 to 4") and \
            expected in str(error)
        assert seconds < 0.5


def test_max_memory_refuses_what_the_machine_could_hold(recorded, capsys, tmp_path):
    tmp, directory, acts = recorded
    theory = theory_for(directory, "r: {kind: linear, from: x, predicts: z}\n"
                                   "t: {kind: lookup, of: [a, b], size: [700, 700], predicts: y}\n")
    error, seconds, _ = _refused(theory, acts, FitConfig(progress=False, max_memory="100M"))
    assert re.search(r"^synthetic.yaml:7:3: error: lookup component 't' needs [\d.]+ MB to fit \(1,960,000 parameters .* "
                     r"over the 100.0 MB allowed \(--max-memory; library: FitConfig.max_memory\); without the components "
                     r"reported here it needs [\d.]+ KB, which leaves [\d.]+ MB: at most ~[\d,]+ parameters at this "
                     r"batch size$", str(error), re.M), str(error)
    assert "'r'" not in str(error)  # only what has to go is named
    assert fit(theory, acts, FitConfig(progress=False, max_memory="1G", max_steps=2)).params
    path = tmp / "big.yaml"
    path.write_text(theory.to_yaml())
    capsys.readouterr()
    assert main(["infer", str(path), "--max-memory", "100M", "--cache", str(tmp / "cache"), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert re.search(rf"^{path}:\d+:\d+: error: lookup component 't' needs", err, re.M) and "Traceback" not in err
    assert not (tmp_path / "params.safetensors").exists()


@pytest.mark.parametrize("text, size", [("4G", 4 * 10 ** 9), ("512M", 512 * 10 ** 6), ("1.5GB", 1_500_000_000),
                                        ("2GiB", 2 * 2 ** 30), ("100", 100), (7, 7)])
def test_memory_sizes_parse(text, size):
    assert FitConfig(max_memory=text).max_memory == size


@pytest.mark.parametrize("bad", ["4X", "1G5", "0", "G", "", 0, -5, 1.5, True])
def test_a_bad_memory_size_is_a_usage_error(bad, capsys):
    from theorycraft.errors import ArgumentError

    with pytest.raises(ArgumentError, match=r"^max_memory must be a size in bytes like 4G, 512M, 1.5GB or 2GiB "
                                            r"\(at least 1 byte\), got "):
        FitConfig(max_memory=bad)
    if isinstance(bad, str):
        with pytest.raises(SystemExit) as info:
            main(["infer", "examples/superposition.yaml", "--max-memory", bad])
        assert info.value.code == 2 and "argument --max-memory: max_memory must be a size" in capsys.readouterr().err
