"""``infer`` over N processes on this machine: N workers, each joined to JAX's distributed runtime
(process 0 is the coordinator) through the same environment a cluster scheduler sets, so a
worker here and a task of a Slurm or Kubernetes job run the same code. The parent only starts
them, relays process 0's log, and reads the artifact process 0 writes.

Each worker runs ``WORKER`` with JOB (JOB: the pickled call, written by
``spawn`` to a private temporary folder)."""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import MappingProxyType

from theorycraft.errors import USER_ERRORS, FitError
from theorycraft.inference.engine import COORDINATOR, NUM_PROCESSES, PROCESS_ID


# A worker's command. Not ``python -m``: that puts the working directory first on the import path,
# so a numpy.py (or any module) lying there would run in every worker, untrusted. ``-c`` puts ''
# there instead, which is removed before anything is imported.
WORKER = "import sys; sys.path.pop(0); from theorycraft._processes import _worker; sys.exit(_worker(sys.argv[1]))"
LOG = "theorycraft-log: "  # process 0's log lines on its stdout (JAX and gloo may print there too)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def spawn(processes: int, job: dict, log) -> None:
    """Run ``api.infer(**job)`` on ``processes`` local workers; process 0's log lines go to
    ``log``. A worker that fails stops the others; its error is raised here."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="theorycraft-processes-") as folder:
        path = Path(folder) / "job.pickle"
        path.write_bytes(_dumps(job))
        workers, outputs = [], []
        for k in range(processes):
            env = dict(os.environ, **{COORDINATOR: f"localhost:{port}", NUM_PROCESSES: str(processes),
                                      PROCESS_ID: str(k)})
            out = open(Path(folder) / f"worker{k}.txt", "w+")
            outputs.append(out)
            workers.append(subprocess.Popen([sys.executable, "-c", WORKER, str(path)], env=env,
                                             stdout=subprocess.PIPE if k == 0 else out, stderr=out, text=True))
        relay = threading.Thread(target=lambda: [log(line[len(LOG):].rstrip("\n")) for line in workers[0].stdout
                                                 if line.startswith(LOG)], daemon=True)
        relay.start()  # process 0's log, as it comes
        try:
            failed = _wait(workers)
        finally:
            for w in workers:  # a failed worker stops the others (only ours, by their ids)
                if w.poll() is None:
                    w.kill()
                    w.wait()
            relay.join(timeout=5)
        if failed is not None:
            outputs[failed].seek(0)
            lines = outputs[failed].read().splitlines()
            said = [k for k, line in enumerate(lines) if line.startswith("error: ")]  # its message, to the end
            raise FitError(f"process {failed} of {processes} failed (exit status {workers[failed].returncode}): "
                           + ("\n".join(lines[said[-1]:])[len("error: "):] if said else
                              "its last output:\n" + "\n".join(lines[-15:])))


def _dumps(job: dict) -> bytes:
    """Pickle a job; a Theory's read-only mappings travel as dicts and come back read-only."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer)
    pickler.dispatch_table = copyreg.dispatch_table | {MappingProxyType: lambda m: (_read_only, (dict(m),))}
    pickler.dump(job)
    return buffer.getvalue()


def _read_only(mapping: dict) -> MappingProxyType:
    return MappingProxyType(mapping)


def _wait(workers) -> int | None:
    """Wait for every worker; the first that fails (by index), or None."""
    import time

    while True:
        codes = [w.poll() for w in workers]
        bad = [k for k, c in enumerate(codes) if c not in (None, 0)]
        if bad:
            return bad[0]
        if all(c == 0 for c in codes):
            return None
        time.sleep(0.05)


def _worker(path: str) -> int:
    from theorycraft import api
    from theorycraft.inference.engine import cluster_from_environment, initialize, is_leader

    initialize(cluster_from_environment())
    job = pickle.loads(Path(path).read_bytes())
    leader = is_leader()
    progress = job.pop("progress", False) and leader  # one bar, process 0's
    try:
        api.infer(**job, log=(lambda m: print(LOG + m, flush=True)) if leader else (lambda m: None), progress=progress)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0

