"""Crash consistency: ``theorycraft capture`` and ``theorycraft infer`` killed with SIGKILL at random
points, then run again, end where a run never killed ends.

    python benchmarks/crash_consistency.py --trials 20

A capture trial kills a capture of builtin:superposition into a fresh store, reruns it, and compares
the store with a clean capture byte for byte: the manifest and every file of every shard. The
capture runs with small shards (``SHARD_BYTES``, set by the wrapper below: shards are sized in
bytes, not by --batch-size), so a kill lands between, or inside, the writes of many shards.

An infer trial kills ``theorycraft infer examples/superposition.yaml`` (its readout, a ReLU, is
fitted by Adam and checkpointed every 200 steps into --out), reruns it into the same --out, and
compares the artifact with a clean run's: theory.yaml byte for byte, every tensor of
params.safetensors byte for byte (a resumed fit restores parameters, Adam's state, the step and
the best so far, and draws the same batches, so it is the same fit), the rest of its metadata and
scorecard.json field for field, leaving out only the seconds the fit took (wall-clock time,
different on every run; it is why the two files' own bytes differ).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARD_BYTES = 16_000  # 160 examples of superposition's two sites (5 + 20 floats) a shard
CAPTURE = ["builtin:superposition", "--sites", "hook_hidden", "hook_output", "--n", "3000", "--batch-size", "40"]
INFER = [str(ROOT / "examples" / "superposition.yaml"), "--n", "1000", "--max-steps", "600"]
# the CLI, with small shards (the store's module constant; everything else as a user runs it)
WRAPPER = ("import sys, theorycraft.store._capture as store; store.SHARD_BYTES = int(sys.argv[1]); "
           "from theorycraft.cli import main; sys.exit(main(sys.argv[2:]))")


def command(*argv: str) -> list[str]:
    return [sys.executable, "-c", WRAPPER, str(SHARD_BYTES), *argv]


def run(argv: list[str]) -> tuple[int, float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=os.environ | {"TQDM_DISABLE": "1"})
    return done.returncode, time.perf_counter() - start, done.stderr


def killed(argv: list[str], after: float, once=None) -> bool:
    """Run ``argv`` and SIGKILL it (its process group) ``after`` seconds in, or ``after`` seconds
    after ``once()`` first holds (polled every 10 ms); False if it ended first."""
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True, env=os.environ | {"TQDM_DISABLE": "1"})
    while once is not None and not once():
        if process.poll() is not None:
            return False
        time.sleep(0.01)
    try:
        process.wait(timeout=after)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return True


# --- what a run leaves ----------------------------------------------------------------------------

def store_files(cache: Path) -> dict[str, bytes]:
    """Every file of a store (the empty lock file aside), by path inside it."""
    return {str(p.relative_to(cache)): p.read_bytes() for p in sorted(cache.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def store_state(cache: Path) -> str:
    """Where a killed capture stopped: before writing, mid-capture (shards written), or finished."""
    if list(cache.glob("*/manifest.json")):
        return "finished"
    return "mid-capture" if list(cache.glob("*/shard-*")) or list(cache.glob("*/inputs.npy")) else "before writing"


def _timeless(value):
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def artifact(run_dir: Path) -> dict:
    """An infer artifact as compared: tensors as bytes, metadata and scorecard without seconds."""
    from safetensors import safe_open

    with safe_open(str(run_dir / "params.safetensors"), "numpy") as f:
        tensors = {k: (f.get_tensor(k).dtype.str, f.get_tensor(k).shape, f.get_tensor(k).tobytes()) for k in f.keys()}
        meta = {k: json.loads(v) if k == "fit" else v for k, v in f.metadata().items()}
    return {"theory.yaml": (run_dir / "theory.yaml").read_bytes(), "tensors": tensors, "metadata": _timeless(meta),
            "scorecard": _timeless(json.loads((run_dir / "scorecard.json").read_text()))}


def artifact_state(run_dir: Path) -> str:
    if (run_dir / "scorecard.json").exists():
        return "finished"
    return "mid-fit (checkpointed)" if list(run_dir.glob("checkpoint*.npz")) else "before a checkpoint"


def differences(a: dict, b: dict) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


# --- trials ---------------------------------------------------------------------------------------

@dataclass
class Summary:
    what: str
    trials: int = 0
    states: dict = field(default_factory=dict)  # where the kill landed -> trials
    identical: int = 0
    failures: list = field(default_factory=list)

    def add(self, state: str, diff: list[str]) -> None:
        self.trials += 1
        self.states[state] = self.states.get(state, 0) + 1
        if diff:
            self.failures.append(f"trial {self.trials} (killed {state}): differs in {', '.join(diff)}")
        else:
            self.identical += 1

    def __str__(self) -> str:
        landed = ", ".join(f"{n} {s}" for s, n in sorted(self.states.items()))
        return (f"{self.what}: {self.identical} of {self.trials} reruns identical to a clean run (killed: {landed})"
                + "".join(f"\n  {f}" for f in self.failures))


def capture_trials(work: Path, trials: int, rng: np.random.Generator, log=print, argv=CAPTURE) -> Summary:
    """Even trials are killed at a uniform time in the run; odd ones within the half second after
    the first shard lands (while the others are written)."""
    clean = work / "clean-store"
    code, seconds, err = run(command("capture", *argv, "--cache", str(clean)))
    assert code == 0, err
    expected = store_files(clean)
    summary = Summary("capture")
    for k in range(trials):
        cache = work / f"store-{k}"
        again = command("capture", *argv, "--cache", str(cache))
        was_killed = (killed(again, rng.uniform(0, 1) * seconds) if k % 2 == 0 else
                      killed(again, rng.uniform(0, 0.5), lambda: bool(list(cache.glob("*/shard-*/*.npy")))))
        state = store_state(cache) if was_killed else "never (it ended first)"
        code, _, err = run(again)
        got = store_files(cache) if code == 0 else {}
        summary.add(state, differences(got, expected) if code == 0 else [f"the rerun (exit {code}: {err[-300:]})"])
        log(f"capture trial {k}: killed {state}")
        shutil.rmtree(cache)
    return summary


def infer_trials(work: Path, trials: int, rng: np.random.Generator, log=print, argv=INFER) -> Summary:
    """Even trials are killed at a uniform time in the run; odd ones within the two seconds after
    the first checkpoint lands (so the rerun resumes from it)."""
    cache = work / "infer-store"
    assert run(command("capture", argv[0], "--n", argv[2], "--cache", str(cache)))[0] == 0
    clean = work / "clean-run"
    code, seconds, err = run(command("infer", *argv, "--cache", str(cache), "--out", str(clean)))
    assert code == 0, err
    expected = artifact(clean)
    summary = Summary("infer")
    for k in range(trials):
        out = work / f"run-{k}"
        again = command("infer", *argv, "--cache", str(cache), "--out", str(out))
        was_killed = (killed(again, rng.uniform(0, 1) * seconds) if k % 2 == 0 else
                      killed(again, rng.uniform(0, 2), lambda: (out / "checkpoint.npz").exists()))
        state = artifact_state(out) if was_killed else "never (it ended first)"
        code, _, err = run(again)
        resumed = next((line for line in err.splitlines() if line.startswith("resumed from step")), None)
        state += f", {resumed}" if resumed else ""
        summary.add(state, differences(artifact(out), expected) if code == 0 else
                    [f"the rerun (exit {code}: {err[-300:]})"])
        log(f"infer trial {k}: killed {state}")
        shutil.rmtree(out)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials of each command")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--only", choices=("capture", "infer"), help="one command only")
    args = parser.parse_args()
    import tempfile

    rng = np.random.default_rng(args.seed)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="crash-") as tmp:
        summaries = [f(Path(tmp), args.trials, rng) for name, f in (("capture", capture_trials), ("infer", infer_trials))
                     if args.only in (None, name)]
    print(f"\n{args.trials} trials a command in {time.time() - start:.0f}s")
    for s in summaries:
        print(s)
    sys.exit(1 if any(s.failures for s in summaries) else 0)


if __name__ == "__main__":
    main()
