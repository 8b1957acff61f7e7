"""What a shared cluster, a downloaded model directory or a run directory may bring (issue 29): code
shipped beside the data, planted symlinks, traversal in recorded site names, FIFOs, malformed
files, a cache pointed at the wrong place. Each case plants its payload and checks that nothing
ran (a canary file stays absent), nothing outside was written (a victim file survives) or read
(a canary's text is not shown), nothing blocked (a FIFO is refused within seconds), and bad input
exits 1 with what was expected and found, never a traceback."""

import importlib.util
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import ROOT
from theorycraft.files import UnsafeFileError, open_lock, read_json, write_atomically
from theorycraft._processes import WORKER
from theorycraft.cli import main
from theorycraft.errors import ArtifactError, StoreError, TargetError
from theorycraft.store import cache_root, capture

from test_store import HOOKS, Counting

VICTIM = "precious: must survive\n"


def no_traceback(captured) -> None:
    assert "Traceback" not in captured.out + captured.err


def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM)
    return path


def finishes_within(seconds: float, call):
    """``call()``'s result, or a failure if it is still running (blocked on a FIFO) after ``seconds``."""
    box = {}

    def run():
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - carried to the test thread
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


# --- code that ran without being trusted --------------------------------------------------------

def _planted_numpy(folder):
    canary = folder / "canary.txt"
    (folder / "numpy.py").write_text(f"open({str(canary)!r}, 'w').write('ran')\nraise ImportError('planted')\n")
    return canary


def test_a_worker_does_not_import_modules_from_the_working_directory(tmp_path):
    canary = _planted_numpy(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", WORKER, str(tmp_path / "no-such-job")], cwd=tmp_path, env=env,
                   capture_output=True, timeout=120)
    assert not canary.exists()
    # the control: started as `python -m` (as before), the planted module runs
    subprocess.run([sys.executable, "-m", "theorycraft._processes", "x"], cwd=tmp_path, env=env,
                   capture_output=True, timeout=120)
    assert canary.read_text() == "ran"


@pytest.mark.parametrize("config_file", ["config.json", "tokenizer_config.json"])
def test_a_model_directory_that_ships_code_is_refused_and_its_code_never_runs(tmp_path, capsys, config_file,
                                                                              monkeypatch):
    pytest.importorskip("transformers")
    model = tmp_path / "model"
    model.mkdir()
    canary = tmp_path / "canary.txt"
    (model / "modeling_evil.py").write_text(f"open({str(canary)!r}, 'w').write('ran')\n")
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}
    auto_map = {"auto_map": {"AutoModelForCausalLM": "modeling_evil.Evil", "AutoConfig": "modeling_evil.Config"}}
    (model / "config.json").write_text(json.dumps(config | (auto_map if config_file == "config.json" else {})))
    (model / "tokenizer_config.json").write_text(json.dumps(auto_map if config_file != "config.json" else {}))
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("y\ny\ny\n"))  # a "yes" waiting on the terminal
    for trust in ([], ["--trust-code"]):
        assert main(["sites", f"hf:{model}", *trust]) == 1
        err = capsys.readouterr().err
        assert "auto_map" in err and "never runs a model directory's own code" in err and "torch:" in err
    assert not canary.exists()


# --- writes outside the directory given ---------------------------------------------------------

def test_writes_replace_a_planted_symlink_never_write_through_it(tmp_path):
    target = victim(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    for name in ("diagnosis.json", "scorecard.json", ".scorecard.tmp.json", "report.html", ".report.html.tmp"):
        (run / name).symlink_to(target)
    write_atomically(run / "diagnosis.json", "{}")
    write_atomically(run / "report.html", "<html>")
    assert target.read_text() == VICTIM
    assert not (run / "diagnosis.json").is_symlink() and (run / "diagnosis.json").read_text() == "{}"
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]  # no temporary left


def test_a_scorecard_and_a_report_never_write_through_planted_links(tmp_path):
    from theorycraft import api

    target = victim(tmp_path)
    run = tmp_path / "run"
    api.infer(ROOT / "examples" / "superposition.yaml", out_dir=run, n=400, max_steps=30, cache_dir=tmp_path / "c",
              progress=False, log=lambda m: None)
    for name in (".scorecard.tmp.json", ".report.html.tmp"):
        (run / name).symlink_to(target)
    from theorycraft._report import report
    from theorycraft.scoring import Scorecard

    Scorecard.load(run).save(run)
    report(run)
    assert target.read_text() == VICTIM
    assert not (run / "scorecard.json").is_symlink() and json.loads((run / "scorecard.json").read_text())
    (run / "diagnosis.json").symlink_to(target)  # read by the report: refused, not read through
    with pytest.raises(ArtifactError, match="symbolic link"):
        report(run)
    # the artifact itself, the metrics log and a checkpoint, each a planted link: none written through
    for name in ("theory.yaml", "params.safetensors", "metrics.jsonl", "checkpoint.npz"):
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(target)
    fit_again = lambda: api.infer(ROOT / "examples" / "superposition.yaml", out_dir=run, n=400, max_steps=30,  # noqa
                                  cache_dir=tmp_path / "c", progress=False, log=lambda m: None)
    with pytest.raises(UnsafeFileError, match="metrics.jsonl: expected a file to append to, found a symbolic link"):
        fit_again()  # a log is appended to, so a link there is refused rather than replaced
    (run / "metrics.jsonl").unlink()
    fit_again()
    assert target.read_text() == VICTIM
    assert not (run / "theory.yaml").is_symlink() and not (run / "params.safetensors").is_symlink()


def test_a_store_lock_that_is_a_link_is_refused_and_its_target_kept(tmp_path):
    target = victim(tmp_path)
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        (tmp_path / "lock").symlink_to(target)
        open_lock(tmp_path / "lock")
    assert target.read_text() == VICTIM
    acts = capture(Counting(), HOOKS, n=32, cache_dir=tmp_path / "store", batch_size=16, progress=False)
    directory = acts.directory
    for p in list(directory.iterdir()):  # the capture again, from nothing, its lock a planted link
        if p.is_dir():
            import shutil
            shutil.rmtree(p)
        else:
            p.unlink()
    (directory / ".lock").symlink_to(target)
    with pytest.raises(StoreError, match="lock"):
        capture(Counting(), HOOKS, n=32, cache_dir=tmp_path / "store", batch_size=16, progress=False)
    assert target.read_text() == VICTIM


def test_cache_rm_in_a_directory_that_is_not_a_store_deletes_nothing(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    for name in ("Documents", ".ssh", "abc"):
        (home / name).mkdir(parents=True)
        (home / name / "keep.txt").write_text("mine")
    (home / "0123456789abcdef0123").mkdir()  # named like a capture, but holds none
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "0123456789abcdef0124").mkdir(parents=True)
    (elsewhere / "0123456789abcdef0124" / "manifest.json").write_text("{}")
    (home / "0123456789abcdef0124").symlink_to(elsewhere / "0123456789abcdef0124")  # a link to a "capture"
    monkeypatch.setenv("THEORYCRAFT_CACHE", str(home))
    for name in ("Doc", ".ss", "a", "0123", "0123456789abcdef0124"):
        assert main(["cache", "rm", name]) == 1
        no_traceback(capsys.readouterr())
    assert main(["cache", "rm", "x", "--cache", str(home)]) == 1
    assert sorted(p.name for p in home.iterdir()) == [".ssh", "0123456789abcdef0123", "0123456789abcdef0124",
                                                       "Documents", "abc"]
    assert all((home / n / "keep.txt").read_text() == "mine" for n in ("Documents", ".ssh", "abc"))
    assert (elsewhere / "0123456789abcdef0124" / "manifest.json").exists()
    assert main(["cache", "ls"]) == 0  # lists no capture: there is none
    assert "0123456789abcdef012" not in capsys.readouterr().out


def test_cache_rm_removes_a_real_capture(tmp_path, capsys):
    acts = capture(Counting(), HOOKS, n=32, cache_dir=tmp_path, batch_size=16, progress=False)
    assert main(["cache", "rm", acts.directory.name[:8], "--cache", str(tmp_path)]) == 0
    assert not acts.directory.exists()


# --- reads outside ------------------------------------------------------------------------------

def _recording(folder, sites, arrays=None):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "inputs.npy", np.arange(12, dtype=np.int64).reshape(4, 3) % 5)
    (folder / "manifest.json").write_text(json.dumps({"sites": sites}))
    for name, array in (arrays or {}).items():
        np.save(folder / name, array)
    return folder


@pytest.mark.parametrize("site", ["../secret", "/etc/hostname", "a/../../secret", "..", "sub/site"])
def test_a_recorded_site_name_cannot_lead_out_of_the_recording(tmp_path, site, capsys):
    secret = tmp_path / "secret.npy"
    np.save(secret, np.full((4, 3, 2), 7.0, np.float32))
    recording = _recording(tmp_path / "rec", [site])
    assert main(["sites", f"activations:{recording}"]) == 1
    err = capsys.readouterr().err
    assert "expected a site name" in err and "Traceback" not in err


def test_a_found_theory_that_is_a_planted_link_is_not_shown_by_report(tmp_path, capsys):
    from theorycraft._report import _checked_text

    canary = tmp_path / "canary.txt"
    canary.write_text("SECRET-CANARY-TEXT")
    search = tmp_path / "search"
    search.mkdir()
    (search / "theory.yaml").symlink_to(canary)
    with pytest.raises(Exception, match="symbolic link") as info:
        _checked_text(search, "theory.yaml")
    assert "SECRET-CANARY-TEXT" not in str(info.value)
    # with a checksum recorded (a search writes one), a swapped file is refused by its checksum
    from theorycraft import _artifact
    (search / "theory.yaml").unlink()
    (search / "theory.yaml").write_text("theory: found\n")
    _artifact.record(search, "theory.yaml")
    (search / "theory.yaml").write_text("SECRET-CANARY-TEXT")
    with pytest.raises(Exception, match="checksum mismatch"):
        _checked_text(search, "theory.yaml")


# --- unbounded ----------------------------------------------------------------------------------

def test_fifos_are_refused_within_seconds(tmp_path, capsys):
    fifo_site = _recording(tmp_path / "rec", ["site"])
    os.mkfifo(fifo_site / "site.npy")
    with pytest.raises(TargetError, match="FIFO"):
        finishes_within(10, lambda: __import__("theorycraft.targets", fromlist=["load_target"]).load_target(
            f"activations:{fifo_site}"))
    os.mkfifo(tmp_path / "text.txt")
    from theorycraft.targets._hf import read_texts
    with pytest.raises(TargetError, match="FIFO"):
        finishes_within(10, lambda: read_texts([tmp_path / "text.txt"]))
    store = tmp_path / "store" / "0123456789abcdef0123"
    store.mkdir(parents=True)
    os.mkfifo(store / "manifest.json")
    from theorycraft.store import ActivationSet
    with pytest.raises(StoreError, match="FIFO"):
        finishes_within(10, lambda: ActivationSet(store))
    assert finishes_within(10, lambda: main(["cache", "ls", "--cache", str(tmp_path / "store")])) == 0


def test_a_huge_one_line_text_is_tokenized_only_as_far_as_the_windows_need(monkeypatch):
    from theorycraft.targets._hf import token_windows

    seen = []

    class Words:  # one token a word, and a record of how many characters it was asked to read
        eos_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            seen.append(len(text))
            return {"input_ids": [1 + len(w) for w in text.split()]}

    line = " ".join(f"w{k % 97}" for k in range(2_000_000))  # ~8 MB, one line
    windows = token_windows(Words(), [line], n=4, seq_len=16, cls_sep=False)
    assert windows.shape == (4, 16)
    assert max(seen) < 100_000  # not the whole document
    whole = [1 + len(w) for w in line.split()][:64]
    assert windows.ravel().tolist() == whole  # the same tokens as tokenizing it whole


# --- bad input is bad input, exit 1 -------------------------------------------------------------

@pytest.mark.parametrize("content, said", [
    (b'{"text": null}\n', "found null"),
    (b'{"text": 5}\n', "found int"),
    (b'[' * 100_000 + b']' * 100_000 + b'\n', "too deeply nested"),
    (b'{"text": "\\ud800 lone"}\n', "lone surrogate"),
    (b'{"text": "ok \xff\xfe bad"}\n', "expected UTF-8"),
])
def test_malformed_jsonl_and_text_say_where(tmp_path, content, said):
    from theorycraft.targets._hf import read_texts

    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"text": "a fine line"}\n' + content)
    with pytest.raises(TargetError, match=said) as info:
        read_texts((), [path])
    assert f"{path}:2" in str(info.value) or "byte" in str(info.value)
    text = tmp_path / "plain.txt"
    text.write_bytes(b"fine\n\xc3(bad\n")
    with pytest.raises(TargetError, match=r"plain.txt:2: expected UTF-8"):
        read_texts([text])


def test_a_deeply_nested_manifest_is_bad_input(tmp_path, capsys):
    recording = _recording(tmp_path / "rec", ["s"])
    (recording / "manifest.json").write_text('{"sites": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert main(["sites", f"activations:{recording}"]) == 1
    no_traceback(capsys.readouterr())
    with pytest.raises(ValueError, match="nested too deeply"):
        read_json(recording / "manifest.json")


def test_out_or_cache_naming_a_file_is_bad_input(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    with pytest.raises(StoreError, match="expected a directory"):
        cache_root(a_file)
    assert main(["cache", "ls", "--cache", str(a_file)]) == 1
    no_traceback(capsys.readouterr())
    code = main(["infer", str(ROOT / "examples" / "superposition.yaml"), "--out", str(a_file), "--n", "200",
                 "--max-steps", "5", "--cache", str(tmp_path / "store")])
    assert code == 1
    out = capsys.readouterr()
    no_traceback(out)
    assert "file" in out.err and a_file.read_text() == "mine"


def _tiny_model_dir(folder, weights):
    transformers = pytest.importorskip("transformers")
    spec = importlib.util.spec_from_file_location("make_tiny_lm", ROOT / "examples" / "lm" / "make_tiny_lm.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    make.save_tiny_lm("gpt2", folder, make.tiny_tokenizer())
    if weights == "pickle":  # a pickled checkpoint that would run code if unpickled without weights_only
        for p in folder.glob("*.safetensors"):
            p.unlink()
        canary = folder.parent / "canary.txt"
        payload = (b"cos\nsystem\n(S'touch " + str(canary).encode() + b"'\ntR.")
        (folder / "pytorch_model.bin").write_bytes(payload)
        return canary
    config = json.loads((folder / "config.json").read_text())
    config["n_embd"] = config.get("n_embd", 32) * 2  # the config no longer fits the weights
    (folder / "config.json").write_text(json.dumps(config))
    del transformers
    return None


@pytest.mark.parametrize("weights", ["pickle", "mismatch"])
def test_a_broken_model_directory_is_bad_input(tmp_path, capsys, weights):
    canary = _tiny_model_dir(tmp_path / "model", weights)
    assert main(["sites", f"hf:{tmp_path / 'model'}"]) == 1
    out = capsys.readouterr()
    no_traceback(out)
    assert "not a loadable Hugging Face model directory" in out.err
    assert canary is None or not canary.exists()


def test_a_capture_directory_that_is_a_link_is_bad_input(tmp_path, capsys):
    acts = capture(Counting(), HOOKS, n=32, cache_dir=tmp_path / "real", batch_size=16, progress=False)
    store = tmp_path / "store"
    store.mkdir()
    (store / acts.directory.name).symlink_to(acts.directory)
    code = main(["cache", "rm", acts.directory.name, "--cache", str(store)])
    assert code == 1
    no_traceback(capsys.readouterr())
    assert (acts.directory / "manifest.json").exists()
