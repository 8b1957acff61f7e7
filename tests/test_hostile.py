"""Hostile-but-fair inputs (issue 15), one regression test per class: each bad input is refused
with a clear message and exit code (1 bad input, 2 usage, 3 internal error), never a traceback, and
nothing unverified is ever read."""

import errno
import json

import numpy as np
import pytest

from theorycraft.cli import main
from theorycraft.errors import ArgumentError, StoreError
from theorycraft.store import ActivationSet, capture
from theorycraft.targets import write_recording

from test_store import HOOKS, Counting

SUPERPOSITION = ["builtin:superposition", "--sites", "hook_hidden", "--n", "300"]


def no_traceback(captured) -> None:
    assert "Traceback" not in captured.out + captured.err


# --- store poisoning ----------------------------------------------------------------------------

class Dropping(Counting):
    """A target whose record leaves one site out of one batch: its rows would stay zeros."""

    def record(self, inputs, rows, hooks):
        recorded = super().record(inputs, rows, hooks)
        if self.calls == 3:
            recorded.pop(HOOKS[1])
        return recorded


def test_a_capture_missing_rows_is_never_marked_finished(tmp_path):
    with pytest.raises(StoreError, match=r"shard 1 \(examples 32 to 63\) is incomplete, rows written of 32: out 16"):
        capture(Dropping(), HOOKS, n=64, cache_dir=tmp_path, batch_size=16, shard_rows=32, progress=False)
    assert not list(tmp_path.glob("*/manifest.json"))
    with pytest.raises(ArgumentError, match="batch_size must be an integer >= 1, got -1"):
        capture(Counting(), HOOKS, n=64, cache_dir=tmp_path, batch_size=-1, progress=False)


def test_an_edited_or_flipped_manifest_is_refused_naming_the_file(tmp_path, capsys):
    acts = capture(Counting(), HOOKS, n=64, cache_dir=tmp_path, batch_size=16, shard_rows=32, progress=False)
    path = acts.directory / "manifest.json"
    original = path.read_bytes()
    path.write_bytes(original.replace(b"64", b"96"))  # shard rows and example count, still valid JSON
    with pytest.raises(StoreError, match="checksum mismatch") as info:
        ActivationSet(acts.directory)
    assert str(path) in str(info.value) and "capture again" in str(info.value)
    for at in range(0, len(original), 11):  # every 11th byte, one bit flipped
        flipped = bytearray(original)
        flipped[at] ^= 0x04
        path.write_bytes(bytes(flipped))
        try:
            ActivationSet(acts.directory)
        except StoreError as exc:
            assert str(path) in str(exc)
        else:  # only a flip that leaves the same content (none we know of) may pass
            assert json.loads(bytes(flipped)) == json.loads(original)
    path.write_bytes(original.replace(b"64", b"96"))
    # the CLI: the capture is found in the store, refused, exit 1, no traceback
    cache = tmp_path / "cli"
    assert main(["capture", *SUPERPOSITION, "--cache", str(cache)]) == 0
    manifest = next(cache.glob("*/manifest.json"))
    manifest.write_text(manifest.read_text().replace('"n_examples": 300', '"n_examples": 301'))
    capsys.readouterr()
    assert main(["capture", *SUPERPOSITION, "--cache", str(cache)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {manifest}: checksum mismatch")
    no_traceback(captured)


def test_a_resumed_capture_removes_stale_temporaries(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        capture(Counting(fail_on=6), HOOKS, n=128, cache_dir=tmp_path, batch_size=16, shard_rows=32, progress=False)
    directory = next(tmp_path.iterdir())
    (directory / "shard-00002").mkdir(exist_ok=True)
    stale = [directory / ".inputs.npy.999.1.tmp", directory / "shard-00002" / ".out.npy.999.1.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    acts = capture(Counting(), HOOKS, n=128, cache_dir=tmp_path, batch_size=16, shard_rows=32, progress=False)
    assert not any(path.exists() for path in stale) and not list(directory.rglob("*.tmp"))
    acts.verify()


def test_a_full_disk_stops_the_capture_cleanly_and_says_how_much_space(tmp_path, capsys, monkeypatch):
    from theorycraft.store import _durable as store  # where a capture's files are written

    real = store._OpenFile.append

    def full_disk(self, data):  # inputs.npy fits, the first shard's rows do not
        self.file.write(b"\0" * 4096)  # a partly written temporary file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store._OpenFile, "append", full_disk)
    cache = tmp_path / "cache"
    assert main(["capture", *SUPERPOSITION, "--cache", str(cache)]) == 1
    captured = capsys.readouterr()
    assert "no space left on the device" in captured.err and "needs about 6.0 KB more" in captured.err
    no_traceback(captured)
    assert not list(cache.rglob("*.tmp")) and not list(cache.glob("*/manifest.json"))
    monkeypatch.setattr(store._OpenFile, "append", real)
    assert main(["capture", *SUPERPOSITION, "--cache", str(cache)]) == 0  # the rerun finishes it


# --- artifacts ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A fitted and scored artifact of examples/superposition.yaml, written once."""
    from conftest import ROOT

    base = tmp_path_factory.mktemp("artifact")
    out = base / "run"
    code = main(["infer", str(ROOT / "examples" / "superposition.yaml"), "--n", "1000", "--max-steps", "20",
                 "--out", str(out), "--cache", str(base / "cache")])
    assert code == 0
    return out


def _damaged(artifact, tmp_path, name, how):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(artifact, run)
    data = bytearray((run / name).read_bytes())
    if how == "flip":
        data[-5] ^= 0x10  # a data byte (the last tensor's), not the header
    else:
        data = data[: len(data) // 2]
    (run / name).write_bytes(bytes(data))
    return run


@pytest.mark.parametrize("name", ["theory.yaml", "params.safetensors", "scorecard.json"])
@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_a_damaged_artifact_is_refused_naming_the_file(artifact, tmp_path, capsys, name, how):
    from theorycraft.errors import ArtifactError
    from theorycraft.inference import FittedTheory
    from theorycraft.scoring import Scorecard

    run = _damaged(artifact, tmp_path, name, how)
    expected = f"{run / name}: checksum mismatch"
    if name == "scorecard.json":
        with pytest.raises(ArtifactError, match="checksum mismatch"):
            Scorecard.load(run)
        FittedTheory.load(run)  # the theory and its parameters are intact
    else:
        with pytest.raises(ArtifactError, match="checksum mismatch") as info:
            FittedTheory.load(run)
        assert str(run / name) in str(info.value)
    capsys.readouterr()
    for command in (["score", str(run), "--no-splice"], ["diagnose", str(run)]):
        assert main(command) == 1
        captured = capsys.readouterr()
        assert captured.err.startswith(f"error: {expected}")
        no_traceback(captured)


def test_an_artifact_without_checksums_is_refused(artifact, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(artifact, run)
    (run / "checksums.json").unlink()
    assert main(["score", str(run)]) == 1
    assert "no checksums.json" in capsys.readouterr().err


# --- arguments ----------------------------------------------------------------------------------

BAD_FLAGS = [
    (["capture", *SUPERPOSITION[:3], "--n", "-5"], "argument --n: n must be an integer >= 1, got -5"),
    (["capture", *SUPERPOSITION[:3], "--n", "0"], "argument --n: n must be an integer >= 1, got 0"),
    (["capture", *SUPERPOSITION[:3], "--n", "1e3"], "argument --n: n must be an integer >= 1, got '1e3'"),
    (["capture", *SUPERPOSITION[:3], "--batch-size", "0"], "argument --batch-size: batch_size must be an integer >= 1"),
    (["capture", *SUPERPOSITION[:3], "--batch-size", "-1"], "argument --batch-size: batch_size must be an integer >= 1"),
    (["capture", *SUPERPOSITION[:3], "--seed", "-1"], "argument --data-seed/--seed: seed must be an integer >= 0, got -1"),
    (["capture", "builtin:induction"], "name the sites to capture from builtin:induction (--sites"),
    (["capture", "builtin:induction", "--sites", "a/b"], "argument --sites: expected a site (hook point) like"),
    (["infer", "examples/superposition.yaml", "--max-steps", "-3"], "argument --max-steps: max_steps must be an "
                                                                     "integer >= 1, got -3"),
    (["infer", "examples/superposition.yaml", "--lr", "-1"], "argument --lr: learning_rate must be a finite number > 0"),
    (["infer", "examples/superposition.yaml", "--lr", "nan"], "learning_rate must be a finite number > 0, got nan"),
    (["infer", "examples/superposition.yaml", "--seed", "-1"], "seed must be an integer >= 0"),
    (["score", "runs/x", "--limit", "0"], "argument --limit: limit must be an integer >= 1"),
    (["diagnose", "runs/x", "--top", "0"], "argument --top: top must be an integer >= 1"),
    (["diagnose", "runs/x", "--worst", "-1"], "argument --worst: worst must be an integer >= 0"),
    (["search", "examples/superposition.yaml", "--budget-bits", "0"], "budget_bits must be a finite number > 0"),
    (["search", "examples/superposition.yaml", "--budget-minutes", "-2"], "budget_minutes must be a finite number > 0"),
    (["search", "examples/superposition.yaml", "--tries", "0"], "tries must be an integer >= 1"),
    (["search", "examples/superposition.yaml", "--target-coverage", "1.5"], "target_coverage must be a finite "
                                                                            "number in (0, 1), got 1.5"),
]


@pytest.mark.parametrize("argv, message", BAD_FLAGS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_FLAGS])
def test_every_numeric_flag_is_range_checked_as_a_usage_error(argv, message, capsys, tmp_path, at_root):
    with pytest.raises(SystemExit) as info:
        code = main([*argv, *(["--cache", str(tmp_path)] if argv[0] in ("capture", "infer", "search") else [])])
        raise SystemExit(code)
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.err.startswith(f"usage: theorycraft {argv[0]}")
    assert f"theorycraft {argv[0]}: error: " in captured.err and message in captured.err
    no_traceback(captured)
    assert not list(tmp_path.iterdir())  # refused before anything was captured


def test_library_functions_raise_the_same_message(tmp_path):
    import theorycraft
    from theorycraft.inference import FitConfig

    with pytest.raises(ArgumentError, match=r"^n must be an integer >= 1, got -5$"):
        theorycraft.capture("builtin:superposition", ["hook_hidden"], n=-5, cache_dir=tmp_path)
    with pytest.raises(ArgumentError, match=r"^expected a site \(hook point\) like .* got 'a/b'$"):
        theorycraft.capture("builtin:superposition", ["a/b"], cache_dir=tmp_path)
    with pytest.raises(ArgumentError, match="name the sites to capture from builtin:induction"):
        theorycraft.capture("builtin:induction", cache_dir=tmp_path)
    with pytest.raises(ArgumentError, match=r"^learning_rate must be a finite number > 0, got -1$"):
        theorycraft.infer("examples/superposition.yaml", learning_rate=-1, cache_dir=tmp_path)
    with pytest.raises(ArgumentError, match=r"^max_steps must be an integer >= 1, got 0$"):
        FitConfig(max_steps=0)
    with pytest.raises(ArgumentError, match=r"^seed must be an integer >= 0, got True$"):
        capture(Counting(), HOOKS, seed=True, cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())


# --- the last resort ----------------------------------------------------------------------------

def test_an_unexpected_exception_is_an_internal_error_exit_3(monkeypatch, capsys):
    from theorycraft import cli

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "_schema", broken)
    monkeypatch.delenv("THEORYCRAFT_DEBUG", raising=False)
    assert main(["schema"]) == 3
    captured = capsys.readouterr()
    assert captured.err.startswith("internal error: RuntimeError: a bug\n") and "Please report it" in captured.err
    no_traceback(captured)
    monkeypatch.setenv("THEORYCRAFT_DEBUG", "1")  # the traceback, for the report
    with pytest.raises(RuntimeError, match="a bug"):
        main(["schema"])


# --- recorded activations -----------------------------------------------------------------------

def _recording(tmp_path, inputs, site):
    return write_recording(tmp_path / "recorded", inputs, {"x": site})


@pytest.mark.parametrize("inputs, site, message", [
    (np.arange(50), np.zeros((50, 4), np.float32),
     r"inputs.npy: expected \[N, T\] integer token ids or \[N, D\] floats \(N >= 1\), found int64 \[50\]"),
    (np.zeros((50, 2, 2), np.int32), np.zeros((50, 4), np.float32), r"inputs.npy: expected .* found int32 \[50, 2, 2\]"),
    (np.zeros((50, 2), np.int32), np.zeros(50, np.float32),
     r"x.npy: expected a float array \[N, D\], \[N, T, D\] or \(an attention pattern\) \[N, H, T, T\] with N = 50 rows \(one per input\), found float32 \[50\]"),
    (np.zeros((50, 2), np.int32), np.zeros((50, 4), np.int64), r"x.npy: expected a float array .* found int64 \[50, 4\]"),
], ids=["1-D inputs", "3-D inputs", "1-D site", "int site"])
def test_a_recording_of_the_wrong_shape_names_file_and_shapes(tmp_path, capsys, inputs, site, message):
    from theorycraft.errors import TargetError
    from theorycraft.targets import load_target

    d = _recording(tmp_path, inputs, site)
    with pytest.raises(TargetError, match=message):
        load_target(f"activations:{d}")
    assert main(["sites", f"activations:{d}"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {d}/") and "found" in captured.err
    no_traceback(captured)


def test_token_variables_over_float_inputs_are_a_theory_error(tmp_path, capsys):
    d = _recording(tmp_path, np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32),
                   np.zeros((60, 4), np.float32))
    theory = tmp_path / "t.yaml"
    theory.write_text(f"theory: t\ntarget: activations:{d}\nsites: {{x: x}}\nvariables: {{a: 'token[0]'}}\n"
                      "components:\n  waves: {kind: fourier, of: [a], modulus: 7, frequencies: [1]}\n"
                      "  read: {kind: linear, from: waves, predicts: x}\n")
    assert main(["infer", str(theory), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run")]) == 1
    captured = capsys.readouterr()
    assert f"{theory}:4:16: error: variable 'a' reads token[...], but the inputs of activations:{d} are float32 " \
           f"vectors [60, 3], not integer token ids [N, T]" in captured.err
    no_traceback(captured)


def test_an_hf_directory_without_weights_says_what_it_lacks(tmp_path, capsys):
    pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1,
                                                      "num_attention_heads": 2, "intermediate_size": 16,
                                                      "vocab_size": 30}))
    assert main(["sites", f"hf:{tmp_path}"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: hf:{tmp_path}: {tmp_path} is not a loadable Hugging Face model directory")
    no_traceback(captured)


# --- theory files: includes, sizes, depth, expressions ------------------------------------------

HEAD = "theory: t\ntarget: builtin:modadd-p113\n"


def _validate(capsys, *argv):
    import time

    start = time.perf_counter()
    code = main(["validate", *map(str, argv)])
    captured = capsys.readouterr()
    no_traceback(captured)
    assert time.perf_counter() - start < 5
    return code, captured.err


def test_includes_stay_inside_the_theory_tree_and_quote_nothing(tmp_path, capsys):
    import os

    (tmp_path / "theory" / "parts").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "s.yaml").write_text("sites: {s: blocks.0.hook_resid_post}\n")
    os.symlink("/etc/passwd", tmp_path / "theory" / "parts" / "link.yaml")
    os.mkfifo(tmp_path / "theory" / "parts" / "fifo.yaml")
    top = tmp_path / "theory" / "t.yaml"
    top.write_text(HEAD + "include: [/etc/passwd, ../../../../../../etc/passwd, /dev/zero, parts/link.yaml, "
                          "parts/fifo.yaml, ../shared/s.yaml]\n")
    code, err = _validate(capsys, top)
    assert code == 1 and "root:" not in err
    lines = err.splitlines()
    assert f"{top}:3:11: error: expected a path relative to this file, found the absolute path '/etc/passwd'" in lines[0]
    assert "include '../../../../../../etc/passwd' leads outside the directories includes may read" in lines[1]
    assert "found the absolute path '/dev/zero'" in lines[2]
    assert "include 'parts/link.yaml' leads outside" in lines[3]  # a link out counts as leaving
    assert "expected a regular file, found a pipe" in lines[4]
    assert "include '../shared/s.yaml' leads outside" in lines[5] and "--include-path DIR" in lines[5]
    top.write_text(HEAD + "include: [../shared/s.yaml]\n")  # allowed once its directory is named
    code, err = _validate(capsys, top, "--include-path", tmp_path / "shared")
    assert code == 0, err


def test_parse_theory_resolves_in_tree_includes_from_the_current_directory(tmp_path, monkeypatch):
    from theorycraft.spec import parse_theory

    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "s.yaml").write_text("sites: {s: blocks.0.hook_resid_post}\n")
    monkeypatch.chdir(tmp_path)
    theory = parse_theory(HEAD + "include: [parts/s.yaml]\ncomponents:\n  c: {kind: rule, when: 'i > 0'}\n"
                                 "  r: {kind: linear, from: c, predicts: s}\n")
    assert list(theory.sites) == ["s"]


def test_devices_huge_deep_and_crowded_files_are_refused_fast(tmp_path, capsys):
    code, err = _validate(capsys, "/dev/zero")
    assert code == 1 and "expected a regular file, found a character device" in err
    big = tmp_path / "big.yaml"
    big.write_text(HEAD + "description: '" + "x" * 1_000_001 + "'\n")
    code, err = _validate(capsys, big)
    assert code == 1 and "expected a file of at most 1,000,000 bytes, found 1,000,0" in err
    deep = tmp_path / "deep.yaml"
    deep.write_text(HEAD + "description: " + "[" * 1000 + "]" * 1000 + "\n")
    code, err = _validate(capsys, deep)
    assert code == 1 and f"{deep}:3:77: error: expected YAML nested at most 64 levels deep" in err
    wide = tmp_path / "wide.yaml"
    wide.write_text(HEAD + "description: [" + ", ".join(["1"] * 150_000) + "]\n")
    code, err = _validate(capsys, wide)
    assert code == 1 and "expected at most 100,000 values, found more" in err
    crowded = tmp_path / "crowded.yaml"
    crowded.write_text(HEAD + "components:\n" + "".join(f"  c{k}: {{kind: linear, from: x{k}}}\n" for k in range(3000)))
    code, err = _validate(capsys, crowded)
    assert code == 1 and f"{crowded}:1004:3: error: expected at most 1,000 named parts" in err
    assert "too many errors: stopped after 100" in err and len(err.splitlines()) == 101
    huge = tmp_path / "huge.yaml"
    huge.write_text(HEAD + "components:\n  t: {kind: lookup, of: ['token[0]'], size: 100000000000}\n")
    code, err = _validate(capsys, huge)
    assert code == 1 and f"{huge}:4:45: error: expected an integer of at most 10,000,000 in size" in err


def test_expressions_refuse_what_they_cannot_evaluate(tmp_path, capsys):
    import warnings

    from conftest import recorded_target

    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD + "variables: {a: 'token[0] ** -1', b: 'token[0] / 0', c: 'token[0] ** 0.5'}\n")
    code, err = _validate(capsys, bad)
    assert code == 1
    assert f"{bad}:3:29: error: expected a non-negative integer exponent, found -1" in err
    assert "expected a divisor that is not 0, found 0" in err and "exponent, found 0.5" in err
    d = recorded_target(tmp_path)
    theory = tmp_path / "inf.yaml"
    theory.write_text(f"theory: t\ntarget: activations:{d}\nsites: {{y: y}}\n"
                      "variables: {a: 'token[0]', inv: '1 / (a - a)'}\n"
                      "components:\n  t: {kind: lookup, of: [inv], size: 7, predicts: y}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's divide warnings: said by the error instead
        code = main(["infer", str(theory), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    no_traceback(captured)
    assert code == 1 and "error: variable 'inv' = '1 / (a - a)' is inf at example 0" in captured.err
    assert "RuntimeWarning" not in captured.err

