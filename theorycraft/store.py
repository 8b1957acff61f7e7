"""The activation store: sites of a target over a dataset, captured once, trusted, streamed.

A capture is content-addressed by (target identity, hook points, dataset identity, dtype) and
lives in ``CACHE/KEY/``: ``inputs.npy``, ``shard-NNNNN/SITE.npy`` (memory-mappable) and
``manifest.json`` (shapes, dtypes, identities, an xxh3-128 checksum of every file, and a sha256
of the manifest itself, checked on open). Each file is written to a temporary name, fsync'd and
renamed, so a file either is complete or is not there; the manifest is written last, and only once every row of every
site was counted in, so a capture is complete exactly when it has one. Finished shards are listed
in ``progress.json`` as they land, so an interrupted capture resumes where it stopped (its stale
temporary files removed first). A full disk stops the capture with the space it needs.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import queue
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import xxhash

from theorycraft import _arguments
from theorycraft.configs import DTYPES
from theorycraft.errors import StoreError
from theorycraft.spec import HookPoint

FORMAT_VERSION = 3  # 2: the manifest carries its own sha256; 3: files checked by xxh3-128 (older: captured again)
CHECKSUM = "xxh3_128"  # what a manifest's per-file "digest" fields are (new_digest)
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.2  # drawn from all examples, kept where not test: ~16% of them
SHARD_BYTES = 64 << 20  # ~64 MiB of activations per shard


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else $THEORYCRAFT_CACHE, else the platform's user cache directory
    (platformdirs: ~/.cache/theorycraft on Linux, ~/Library/Caches/theorycraft on macOS)."""
    root = cache_dir or os.environ.get("THEORYCRAFT_CACHE")
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("theorycraft", appauthor=False)
    return Path(root).expanduser()


def numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes  # ships with jax

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _hashed_below(n: int, identity: str, fraction: float) -> np.ndarray:
    """Example k is drawn when a hash of (k, identity) falls in the lowest ``fraction``."""
    seed = np.uint64(int(hashlib.sha256(identity.encode()).hexdigest()[:15], 16))
    x = np.arange(n, dtype=np.uint64) + seed
    with np.errstate(over="ignore"):  # splitmix64: wrapping arithmetic is the point
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction


def split_is_test(n: int, dataset_identity: str) -> np.ndarray:
    """The fixed test assignment: TEST_FRACTION of the examples, by a hash of (k, the data's
    identity). Same data, same split, everywhere. Test examples are only ever reported on."""
    return _hashed_below(n, dataset_identity, TEST_FRACTION)


def split_is_validation(n: int, dataset_identity: str) -> np.ndarray:
    """The fixed validation assignment: VALIDATION_FRACTION of the non-test examples, drawn by a
    second hash. Every choice the tool makes (ridge strength, early stopping, quantization,
    search steps) is made on these; the rest of the non-test examples are fitted."""
    drawn = _hashed_below(n, dataset_identity + ":validation", VALIDATION_FRACTION)
    return drawn & ~split_is_test(n, dataset_identity)


# --- durable writes --------------------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TMP_SUFFIX = ".tmp"


def _write_file(tmp: Path, chunks) -> None:
    """Write ``chunks`` (bytes-like) to ``tmp`` and fsync it."""
    with open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def _write_atomically(path: Path, chunks) -> None:
    """``path`` gets ``chunks`` whole or not at all: written to a temporary name (removed again
    on any failure, a full disk included), then renamed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{TMP_SUFFIX}")
    try:
        _write_file(tmp, chunks)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class _OpenFile:
    """One site's file of the shard being written: a temporary name, its checksum so far."""

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple):
        self.path, self.tmp = path, path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{TMP_SUFFIX}")
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


# --- capture ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaptureKey:
    target: str  # the target's identity (a weights hash)
    hooks: tuple[str, ...]
    dataset: str
    dtype: str

    def digest(self) -> str:  # the store's format is part of the address: a new format, a new capture
        key = {**self.__dict__, "format": FORMAT_VERSION}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def site_filename(hook: HookPoint | str) -> str:
    return str(hook).replace(":", "@")


def capture(target, hooks: Sequence[HookPoint], *, n: int | None = None, seed: int = 0,
            dtype: str = "float32", cache_dir=None, batch_size: int = 256, progress: bool = True,
            shard_rows: int | None = None, shift: str | None = None,
            part: tuple[int, int] | None = None) -> "ActivationSet | Path":
    """Record ``hooks`` of ``target`` over its dataset (n examples, shuffled once with ``seed``;
    with ``shift``, the target's named shifted dataset) into the store, or return the capture
    already there. ``part=(K, N)``: only shards K, K + N, K + 2N, ... into a partial store beside
    the capture's (``KEY.part-K-of-N``), whose path is returned; the capture of the same key
    without a part adopts every part's verified shards and records only what they lack."""
    if dtype not in DTYPES:
        raise StoreError(f"expected dtype one of {', '.join(DTYPES)}, found '{dtype}'")
    n, seed = _arguments.check("n", n, optional=True), _arguments.check("seed", seed)
    batch_size = _arguments.check("batch_size", batch_size)
    if shard_rows is not None and shard_rows < 1:
        raise _arguments.ArgumentError(f"shard_rows must be an integer >= 1, got {shard_rows!r}")
    hooks = sorted(set(_arguments.site(h) for h in hooks), key=str)
    if not hooks:
        raise _arguments.ArgumentError("name at least one site to capture")
    shift = _arguments.shift(shift)
    target.check_hooks(hooks)
    dataset = np.asarray(target.dataset(n, seed, shift=shift))
    content = hashlib.sha256(np.ascontiguousarray(dataset).tobytes()).hexdigest()[:16]  # what was fed, exactly
    identity = target.dataset_identity(n, seed) + (f":shift={shift}" if shift else "")  # plain: as before
    key = CaptureKey(target.identity, tuple(map(str, hooks)), f"{identity}:{content}", dtype)
    directory = cache_root(cache_dir) / key.digest()
    if (directory / "manifest.json").exists():
        return ActivationSet(directory)
    if part is not None:
        if not (len(part) == 2 and 0 <= part[0] < part[1]):
            raise _arguments.ArgumentError(f"expected a part K/N with 0 <= K < N, found {part[0]}/{part[1]}")
        directory = directory.with_name(f"{directory.name}.part-{part[0]}-of-{part[1]}")
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second capture of the same key waits, then reuses
        if (directory / "manifest.json").exists():
            return ActivationSet(directory)
        _capture_into(directory, target, dataset, hooks, key, seed, dtype, batch_size, progress, shard_rows, shift, part)
    return directory if part is not None else ActivationSet(directory)


def _capture_into(directory: Path, target, dataset: np.ndarray, hooks, key: CaptureKey, seed, dtype, batch_size,
                  progress, shard_rows, shift=None, part=None) -> None:
    from tqdm.auto import tqdm

    order = np.random.default_rng(seed).permutation(len(dataset))  # shuffled once, fixed seed
    inputs = dataset[order]
    total = len(inputs)
    if total == 0:
        raise StoreError(f"{target.name} gave no examples to capture")
    store_dtype = numpy_dtype(dtype)
    shapes = {str(h): tuple(s) for h, s in target.hooks().items() if h in key.hooks}
    example_bytes = sum(int(np.prod(s)) for s in shapes.values()) * store_dtype.itemsize
    rows = shard_rows or max(batch_size, (SHARD_BYTES // max(example_bytes, 1)) // batch_size * batch_size)
    bounds = [(start, min(start + rows, total)) for start in range(0, total, rows)]

    _remove_stale_temporaries(directory)  # left by a killed capture; we hold the key's lock
    progress_path = directory / "progress.json"
    if part is None:
        _adopt_parts(directory, key, bounds, {site_filename(s) for s in shapes})
    done = _finished_shards(directory, progress_path, key, bounds, {site_filename(s) for s in shapes})
    todo = [k for k in range(len(bounds)) if k not in done and (part is None or k % part[1] == part[0])]
    inputs_digest = done.pop("__inputs__", None)
    try:
        inputs_digest = inputs_digest or write_array(directory / "inputs.npy", inputs)
        lock = threading.Lock()

        def landed(shard: int, sums: dict) -> None:
            with lock:
                done[shard] = sums
                write_json(progress_path, {"key": key.__dict__, "inputs": inputs_digest, "bounds": bounds,
                                           "shards": {str(k): v for k, v in done.items()}})

        bar = tqdm(total=total, initial=total - sum(bounds[k][1] - bounds[k][0] for k in todo), unit="ex",
                   desc=f"capture {target.name}", disable=not progress, dynamic_ncols=True)
        writer = _Writer(landed)
        try:
            for shard in todo:
                start, stop = bounds[shard]
                folder = directory / f"shard-{shard:05d}"
                headers = {name: (store_dtype, (stop - start, *shapes[name])) for name in shapes}
                filled = dict.fromkeys(shapes, 0)  # rows of each site handed to the writer for this shard
                for b in range(start, stop, batch_size):
                    e = min(b + batch_size, stop)
                    recorded = {str(h): v for h, v in target.record(dataset, order[b:e], hooks).items()}
                    batch = {}
                    for site, values in recorded.items():
                        if site not in shapes:
                            continue
                        _check_batch(values, site, (e - b, *shapes[site]), target.name)
                        _check_finite(values, site, order[b:e], target.name)
                        batch[site] = np.asarray(values, store_dtype)  # cast once; no copy when it already is
                        filled[site] += e - b
                    writer.append(folder, headers, batch)
                    bar.update(e - b)
                _check_filled(filled, stop - start, f"shard {shard} (examples {start} to {stop - 1})", target.name)
                writer.land(shard, folder)  # never reached by a short shard: its files are discarded
        finally:
            writer.close()
            bar.close()
        if part is not None:  # a partial store: its shards and progress.json, for the whole capture to adopt
            return
        _check_filled({site: sum(bounds[k][1] - bounds[k][0] for k in done if site_filename(site) in done[k])
                       for site in shapes}, total, "the capture", target.name)
        manifest = {
            "format": "theorycraft-activations", "version": FORMAT_VERSION, "checksum": CHECKSUM, "key": key.__dict__,
            "target": {"name": target.name, "identity": target.identity, "input_kind": target.input_kind,
                       "vocab_size": target.vocab_size},
            "dataset": {"identity": key.dataset, "n": total, "seed": seed, "shift": shift},
            "dtype": dtype, "n_examples": total,
            "sites": {name: {"shape": list(shapes[name]), "file": site_filename(name)} for name in shapes},
            "inputs": {"file": "inputs.npy", "digest": inputs_digest, "shape": list(inputs.shape),
                       "dtype": str(inputs.dtype)},
            "shards": [{"dir": f"shard-{k:05d}", "rows": list(bounds[k]), "digest": done[k]}
                       for k in range(len(bounds))],
        }
        manifest["sha256"] = manifest_digest(manifest)
        write_json(directory / "manifest.json", manifest)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        needed = (inputs_digest is None) * inputs.nbytes + example_bytes * sum(
            stop - start for k, (start, stop) in enumerate(bounds) if k not in done)
        raise _out_of_space(directory, needed) from None
    progress_path.unlink(missing_ok=True)


def _out_of_space(directory: Path, needed: int) -> StoreError:
    """A full disk: the temporary file is gone, the finished shards stay, and the user learns how much more
    space the capture needs."""
    _remove_stale_temporaries(directory)
    free = shutil.disk_usage(directory).free
    return StoreError(f"{directory}: no space left on the device; this capture needs about {_size(needed)} more "
                      f"({_size(free)} free now). Free some space or point --cache (or $THEORYCRAFT_CACHE) at a "
                      f"bigger disk, then run the same command again: the shards already written are kept")


_size = _arguments.bytes_text  # one way to write a size in a message


def _remove_stale_temporaries(directory: Path) -> None:
    for tmp in [*directory.glob(f".*{TMP_SUFFIX}"), *directory.glob(f"shard-*/.*{TMP_SUFFIX}")]:
        tmp.unlink(missing_ok=True)


def _check_batch(values, site: str, expected: tuple, target_name: str) -> None:
    shape = tuple(getattr(values, "shape", ()))
    if shape != expected:
        raise StoreError(f"{target_name} recorded site '{site}' with shape {list(shape)} for a batch, expected "
                         f"{list(expected)} (rows, *the site's shape); nothing of this batch was stored")


def _check_filled(filled: dict, expected: int, where: str, target_name: str) -> None:
    """Every site has ``expected`` rows in ``where``: a capture with a row missing is never finished."""
    short = {site: rows for site, rows in filled.items() if rows != expected}
    if short:
        raise StoreError(f"{target_name}: {where} is incomplete, rows written of {expected}: "
                         + ", ".join(f"{site} {rows}" for site, rows in short.items())
                         + "; the capture was not marked finished (a bug in the target's record, or in theorycraft)")


def _adopt_parts(directory: Path, key: CaptureKey, bounds: list, files: set) -> None:
    """Move the verified shards of every partial store of this key (``capture --part K/N``, cut
    the same way) into ``directory``, and list them in its progress.json, as if this capture had
    written them and been interrupted; a part whose shards are all adopted is removed."""
    path = directory / "progress.json"
    for folder in sorted(directory.parent.glob(f"{directory.name}.part-*-of-*")):
        with open(folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a part still being captured: wait for it
            found = _finished_shards(folder, folder / "progress.json", key, bounds, files)
        inputs = found.pop("__inputs__", None)
        if inputs is None:
            continue
        ours = _finished_shards(directory, path, key, bounds, files)
        if "__inputs__" not in ours:
            os.replace(folder / "inputs.npy", directory / "inputs.npy")
            ours = {"__inputs__": inputs}
        for shard, sums in found.items():
            if shard not in ours:
                target = directory / f"shard-{shard:05d}"
                shutil.rmtree(target, ignore_errors=True)  # a stale, unlisted one
                os.replace(folder / f"shard-{shard:05d}", target)
                ours[shard] = sums
        write_json(path, {"key": key.__dict__, "inputs": ours.pop("__inputs__"), "bounds": bounds,
                          "shards": {str(k): v for k, v in ours.items()}})
        shutil.rmtree(folder, ignore_errors=True)


def _finished_shards(directory: Path, progress_path: Path, key: CaptureKey, bounds: list, files: set) -> dict:
    """Shards an interrupted capture finished, each re-verified; anything doubtful is redone."""
    try:
        state = json.loads(progress_path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict) or state.get("key") != json.loads(json.dumps(key.__dict__)):
        return {}
    if state.get("bounds") != json.loads(json.dumps(bounds)):  # shards cut another way (another batch size)
        return {}
    done: dict = {}
    inputs = directory / "inputs.npy"
    if inputs.exists() and file_digest(inputs) == state.get("inputs"):
        done["__inputs__"] = state["inputs"]
    else:
        return {}
    shards = state.get("shards")
    for shard, sums in (shards.items() if isinstance(shards, dict) else ()):
        if not (shard.isdigit() and int(shard) < len(bounds) and isinstance(sums, dict) and set(sums) == files):
            continue
        folder = directory / f"shard-{int(shard):05d}"
        if all((folder / f"{name}.npy").exists() and file_digest(folder / f"{name}.npy") == s
               for name, s in sums.items()):
            done[int(shard)] = sums
    return done


def _check_finite(values: np.ndarray, site: str, examples: np.ndarray, target_name: str) -> None:
    finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise StoreError(f"non-finite activation (NaN or Inf) at site '{site}' of {target_name}, "
                         f"dataset example {int(examples[bad])}; nothing of this batch was stored")


# --- reading ---------------------------------------------------------------------------------------

def _check_manifest(manifest, path: Path, fix: str) -> None:
    """A manifest is used only if it is this format's, its own sha256 matches, and its shards
    cover every example once, in order, with a file for every site."""
    if not isinstance(manifest, dict) or manifest.get("format") != "theorycraft-activations":
        raise StoreError(f"{path}: not a capture manifest; {fix}")
    if manifest.get("version") != FORMAT_VERSION:
        raise StoreError(f"{path}: a capture of store format {manifest.get('version')!r}, expected "
                         f"{FORMAT_VERSION}; {fix}")
    if manifest.get("sha256") != manifest_digest(manifest):
        raise StoreError(f"{path}: checksum mismatch (the manifest is corrupted or was edited); {fix}")
    try:  # a manifest this code wrote has these; checked anyway, so nothing below can trip on them
        files = {site["file"] for site in manifest["sites"].values()}
        assert all(isinstance(d, int) and d >= 0 for site in manifest["sites"].values() for d in site["shape"])
        n, end = manifest["n_examples"], 0
        for shard in manifest["shards"]:
            start, stop = shard["rows"]
            assert start == end and stop > start and set(shard["digest"]) == files
            end = stop
        assert end == n == manifest["inputs"]["shape"][0] and manifest["dataset"]["identity"]
    except (AssertionError, KeyError, TypeError, ValueError, AttributeError, IndexError):
        raise StoreError(f"{path}: an inconsistent capture manifest (its shards do not cover its "
                         f"{manifest.get('n_examples')!r} examples with every site); {fix}") from None


class ActivationSet:
    """A finished capture. Arrays are memory-mapped; each file's checksum is checked before its
    first read, so a torn or corrupted file is reported, never read."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        path = self.directory / "manifest.json"
        try:
            self.manifest = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: not a readable capture manifest ({exc}); {self._fix}") from None
        _check_manifest(self.manifest, path, self._fix)
        self.sites = {name: tuple(s["shape"]) for name, s in self.manifest["sites"].items()}
        self.n = int(self.manifest["n_examples"])
        self._verified: set[Path] = set()
        identity = self.manifest["dataset"]["identity"]
        self.is_test = split_is_test(self.n, identity)
        self.is_validation = split_is_validation(self.n, identity)

    @property
    def key(self) -> str:
        """The capture's key: how the store and artifacts name it."""
        key = self.manifest["key"]
        return CaptureKey(key["target"], tuple(key["hooks"]), key["dataset"], key["dtype"]).digest()

    def _summary(self) -> str:
        splits = " / ".join(f"{name} {int(self.split_mask(name).sum()):,}" for name in ("train", "validation", "test"))
        shift = self.manifest["dataset"].get("shift")
        return (f"{self.manifest['target']['name']}, {self.n:,} examples ({splits}), {self.manifest['dtype']}"
                + (f", shift {shift}" if shift else ""))

    def __repr__(self) -> str:
        lines = [f"ActivationSet({self._summary()}; {self.directory})"]
        width = max(map(len, self.sites), default=0)
        lines += [f"  {site:<{width}}  {list(shape)}" for site, shape in self.sites.items()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from theorycraft._html import code, esc, table

        return "\n".join([f"<p><b>ActivationSet</b> {esc(self._summary())} at {code(self.directory)}</p>",
                          table(["site", "shape per example"], [[s, str(list(v))] for s, v in self.sites.items()])])

    def split_mask(self, name: str) -> np.ndarray:
        """Which examples are 'train' (fitted), 'validation' (every choice) or 'test' (reported)."""
        masks = {"train": ~self.is_test & ~self.is_validation, "validation": self.is_validation,
                 "test": self.is_test}
        if name not in masks:
            raise ValueError(f"expected a split 'train', 'validation' or 'test', found {name!r}")
        return masks[name]

    def split(self, name: str) -> np.ndarray:
        """Indices of one split's examples, in store order."""
        return np.flatnonzero(self.split_mask(name))

    @property
    def _fix(self) -> str:
        return f"delete {self.directory} and capture again (theorycraft capture ...)"

    @property
    def input_kind(self) -> str:
        return self.manifest["target"]["input_kind"]

    @property
    def vocab_size(self) -> int | None:
        return self.manifest["target"].get("vocab_size")

    def _open(self, path: Path, expected: str) -> np.ndarray:
        if path not in self._verified:
            if not path.exists():
                raise StoreError(f"{path}: missing from the capture; {self._fix}")
            if file_digest(path) != expected:
                raise StoreError(f"{path}: checksum mismatch (the file is torn or corrupted); {self._fix}")
            self._verified.add(path)
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if np.issubdtype(array.dtype, np.void):  # .npy has no bfloat16: it stores raw 2-byte values
            array = array.view(numpy_dtype(self.manifest["dtype"]))
        return array

    def verify(self) -> None:
        """Check every file's checksum now (reads everything once)."""
        self.inputs()
        for shard in self.manifest["shards"]:
            for name, expected in shard["digest"].items():
                self._open(self.directory / shard["dir"] / f"{name}.npy", expected)

    def inputs(self) -> np.ndarray:
        return self._open(self.directory / "inputs.npy", self.manifest["inputs"]["digest"])

    def _shard_array(self, shard: dict, site: str) -> np.ndarray:
        name = self.manifest["sites"][site]["file"]
        return self._open(self.directory / shard["dir"] / f"{name}.npy", shard["digest"][name])

    def site(self, site: str) -> np.ndarray:
        """All of one site in memory, float32 ``[N, *shape]``."""
        if site not in self.sites:
            from theorycraft.spec._diagnostics import did_you_mean
            raise StoreError(f"site '{site}' is not in this capture{did_you_mean(site, self.sites)}; "
                             f"captured: {', '.join(self.sites)}")
        return np.concatenate([np.asarray(self._shard_array(s, site), np.float32) for s in self.manifest["shards"]])

    def site_at(self, site: str, rows: np.ndarray) -> np.ndarray:
        """One site at the examples ``rows`` (sorted), float32, opening only the shards that hold
        them (a process of a distributed fit reads its own shards, never the others')."""
        if site not in self.sites:
            return self.site(site)  # the error that names what was captured
        parts = []
        for shard in self.manifest["shards"]:
            start, stop = shard["rows"]
            inside = rows[(rows >= start) & (rows < stop)]
            if len(inside):
                parts.append(np.asarray(self._shard_array(shard, site)[inside - start], np.float32))
        return np.concatenate(parts) if parts else np.zeros((0, *self.sites[site]), np.float32)

    def batches(self, sites: Sequence[str], batch_size: int, split: str | None = None,
                with_inputs: bool = True) -> Iterator[dict]:
        """Stream ``{"index", "inputs", SITE...}`` minibatches in store order, shard by shard,
        never holding more than one shard's rows in memory; ``split`` is 'train', 'validation', 'test' or None.
        Without a split, float32 batches are views of the memory-mapped shards (no copy)."""
        inputs = self.inputs() if with_inputs else None
        for shard in self.manifest["shards"]:
            start, stop = shard["rows"]
            arrays = {s: self._shard_array(shard, s) for s in sites}
            if split is None:
                for b in range(start, stop, batch_size):
                    e = min(b + batch_size, stop)
                    batch = {"index": np.arange(b, e)}
                    if inputs is not None:
                        batch["inputs"] = np.asarray(inputs[b:e])
                    batch.update({s: np.asarray(a[b - start:e - start], np.float32) for s, a in arrays.items()})
                    yield batch
                continue
            index = np.arange(start, stop)[self.split_mask(split)[start:stop]]
            for b in range(0, len(index), batch_size):
                rows = index[b:b + batch_size]
                batch = {"index": rows}
                if inputs is not None:
                    batch["inputs"] = np.asarray(inputs[rows])
                batch.update({s: np.asarray(arrays[s][rows - start], np.float32) for s in sites})
                yield batch
