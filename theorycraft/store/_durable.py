"""Durable writes of a capture's files: each written to a fresh, unguessable temporary name
(``theorycraft.files``), fsync'd and renamed, so a file either is complete or is not there; checksums hashed from the bytes in hand; the
background writer that lands shards while the target runs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import threading
from pathlib import Path

import numpy as np
import xxhash

from theorycraft.files import open_lock, open_regular, replacing, temporary_beside
from theorycraft.errors import StoreError
from theorycraft.spec import HookPoint

def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TMP_SUFFIX = ".tmp"  # what theorycraft.files names its temporaries with: an interrupted write leaves one


def lock_file(directory: Path):
    """``directory/.lock`` opened for ``fcntl.flock``, never through a planted link."""
    try:
        return open_lock(directory / ".lock")
    except (OSError, ValueError) as exc:
        raise StoreError(f"{directory / '.lock'}: cannot lock the capture ({exc}); remove what is there") from None


def _write_file(tmp: Path, chunks) -> None:
    """Write ``chunks`` (bytes-like) to ``tmp`` and fsync it."""
    with open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def _write_atomically(path: Path, chunks) -> None:
    """``path`` gets ``chunks`` whole or not at all: written to a fresh temporary name (removed again
    on any failure, a full disk included), then renamed."""
    with replacing(path) as tmp:
        _write_file(tmp, chunks)


def new_digest():
    """The checksum of every file of a capture: xxh3-128, about 8x sha256's speed here (9 GB/s
    against 1.2 on one core), so the writer barely takes a core from the forward pass; a
    128-bit hash still catches any torn or flipped byte (it guards against accidents, not forgers)."""
    return xxhash.xxh3_128()


def file_digest(path: Path) -> str:
    """A file's checksum (``new_digest``) read from disk: for checking, never while writing."""
    digest = new_digest()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _npy_header(dtype: np.dtype, shape: tuple) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
    return header.getvalue()


def _raw(array: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def write_array(path: Path, array: np.ndarray) -> str:
    """Write ``array`` as .npy atomically and durably; returns its checksum, hashed from the
    bytes in hand (the file is never read back)."""
    chunks = [_npy_header(array.dtype, array.shape), _raw(array)]
    digest = new_digest()
    for chunk in chunks:
        digest.update(chunk)
    _write_atomically(path, chunks)
    return digest.hexdigest()


def write_json(path: Path, data: dict) -> None:
    _write_atomically(path, [json.dumps(data, indent=1).encode()])
    _fsync_dir(path.parent)


def manifest_digest(manifest: dict) -> str:
    """The sha256 a manifest carries of itself: of its canonical JSON, without the digest field."""
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file (artifacts and recorded activations; a capture's files use ``file_digest``)."""
    digest = hashlib.sha256()
    with open_regular(path) as f:  # a FIFO is refused, not waited on
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class _OpenFile:
    """One site's file of the shard being written: a temporary name, its checksum so far."""

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple):
        self.path, self.tmp = path, temporary_beside(path)
        self.digest, self.file = new_digest(), open(self.tmp, "wb")
        self.header = _npy_header(dtype, shape)
        self.digest.update(self.header)
        self.file.write(self.header)

    def append(self, data) -> None:
        self.digest.update(data)
        self.file.write(data)

    def land(self) -> str:
        """fsync, then rename to the real name: the file is complete or absent."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        return self.digest.hexdigest()

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


class _Writer:
    """Writes shards on a background thread, batch by batch as they are recorded, so the forward
    passes never wait on the disk and no shard is ever held in memory: each batch's arrays go
    straight to their site's file and into its checksum, and when a shard's last batch is in,
    each file is fsync'd once and renamed, then the shard is reported done. A shard left open
    (an interrupted or failed capture) never gets its real names. The arrays handed over must not
    be changed afterwards (a target returns fresh arrays from each ``record``)."""

    def __init__(self, on_done, in_flight: int = 2):
        self.jobs: queue.Queue = queue.Queue(maxsize=in_flight)  # bounds the batches held: this + 1 being written
        self.on_done, self.error = on_done, None
        self.open: dict[str, _OpenFile] = {}
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (job := self.jobs.get()) is not None:
            if self.error is None:
                try:
                    job()
                except BaseException as exc:  # surfaced to the capturing thread
                    self.error = exc
        for f in self.open.values():
            f.discard()

    def _append(self, directory: Path, shapes: dict, arrays: dict) -> None:
        if not self.open:
            directory.mkdir(parents=True, exist_ok=True)
            for name, (dtype, shape) in shapes.items():  # one by one: a failure leaves the rest to discard
                self.open[name] = _OpenFile(directory / f"{site_filename(name)}.npy", dtype, shape)
        for name, array in arrays.items():
            self.open[name].append(_raw(array))

    def _land(self, shard: int, directory: Path) -> None:
        sums = {}
        for name, f in list(self.open.items()):
            sums[site_filename(name)] = f.land()
            del self.open[name]
        _fsync_dir(directory)
        self.on_done(shard, sums)

    def _put(self, job) -> None:
        if self.error is not None:
            raise self.error
        self.jobs.put(job)

    def append(self, directory: Path, shapes: dict, arrays: dict) -> None:
        """Add the next rows of each site to the shard in ``directory``; ``shapes`` maps each
        site to (dtype, the whole shard's shape), for the files' headers."""
        self._put(lambda: self._append(directory, shapes, arrays))

    def land(self, shard: int, directory: Path) -> None:
        """The shard's rows are all in: make its files durable and report it done."""
        self._put(lambda: self._land(shard, directory))

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error



def site_filename(hook: HookPoint | str) -> str:
    return str(hook).replace(":", "@")
