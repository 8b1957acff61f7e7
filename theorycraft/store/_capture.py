"""Capture: a target's sites over its dataset, recorded once into the store in shards, resumable
(finished shards listed in progress.json as they land), in parts (``--part K/N``) that a
whole capture adopts; the manifest written last, so a capture is complete exactly when it has one."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from theorycraft.configs import CaptureConfig, bytes_text, site
from theorycraft.errors import ArgumentError, StoreError
from theorycraft.files import read_json
from theorycraft.spec import HookPoint

from ._durable import (TMP_SUFFIX, _Writer, lock_file, file_digest, manifest_digest, site_filename,
                       write_array, write_json)
from ._reading import CHECKSUM, FORMAT_VERSION, ActivationSet, CaptureKey, cache_root, numpy_dtype

SHARD_BYTES = 64 << 20  # ~64 MiB of activations per shard

def capture(target, hooks: Sequence[HookPoint], *, n: int | None = CaptureConfig.n, seed: int = CaptureConfig.seed,
            dtype: str = CaptureConfig.dtype, cache_dir=None, batch_size: int = CaptureConfig.batch_size,
            progress: bool = True,
            shard_rows: int | None = None, shift: str | None = None,
            part: tuple[int, int] | None = None) -> "ActivationSet | Path":
    """Record ``hooks`` of ``target`` over its dataset (n examples, shuffled once with ``seed``;
    with ``shift``, the target's named shifted dataset) into the store, or return the capture
    already there. ``part=(K, N)``: only shards K, K + N, K + 2N, ... into a partial store beside
    the capture's (``KEY.part-K-of-N``), whose path is returned; the capture of the same key
    without a part adopts every part's verified shards and records only what they lack."""
    checked = CaptureConfig(n=n, seed=seed, dtype=dtype, batch_size=batch_size, shift=shift)  # each in its range
    n, seed, batch_size, shift = checked.n, checked.seed, checked.batch_size, checked.shift
    if shard_rows is not None and shard_rows < 1:
        raise ArgumentError(f"shard_rows must be an integer >= 1, got {shard_rows!r}")
    hooks = sorted(set(site(h) for h in hooks), key=str)
    if not hooks:
        raise ArgumentError("name at least one site to capture")
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
            raise ArgumentError(f"expected a part K/N with 0 <= K < N, found {part[0]}/{part[1]}")
        directory = directory.with_name(f"{directory.name}.part-{part[0]}-of-{part[1]}")
    directory.mkdir(parents=True, exist_ok=True)
    with lock_file(directory) as lock:
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


_size = bytes_text  # one way to write a size in a message


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
        with lock_file(folder) as lock:
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
        state = read_json(progress_path, follow=False)
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


