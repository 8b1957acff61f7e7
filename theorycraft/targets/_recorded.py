"""``activations:DIR``: activations recorded elsewhere, brought into the store; ``write_recording``
writes one, ``RecordedTarget`` reads it.

The format (documented in docs/targets.md): ``DIR/manifest.json`` with at least
``{"sites": ["blocks.0.hook_resid_post", ...]}`` (optionally ``"target"``, a free-text identity,
and ``"vocab_size"``), ``DIR/inputs.npy`` (``[N, T]`` int token ids, or ``[N, D]`` floats) and
one ``DIR/SITE.npy`` per site (``[N, T, D]``, ``[N, D]`` or a pattern ``[N, H, T, T]``, any float dtype), where SITE is the
site name with ':' written as '@'.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from theorycraft.files import open_regular, read_json
from theorycraft.store import file_sha256, site_filename, write_array, write_json

from ._base import Target, TargetError


def write_recording(directory: str | os.PathLike, inputs: np.ndarray, sites: Mapping[str, np.ndarray], *,
                    target: str | None = None, vocab_size: int | None = None) -> Path:
    """Write an ``activations:DIR`` recording: ``inputs`` (``[N, T]`` token ids or ``[N, D]``
    floats) and each site's array (``[N, D]``, ``[N, T, D]`` or a pattern ``[N, H, T, T]``),
    with ``target`` (free text: what recorded them) and ``vocab_size`` in its manifest. Arrays
    are written as given, each file atomically; they are checked when the recording is read
    (``load_target('activations:DIR')``). The site files of a recording there before are
    removed, so the directory holds this recording alone. Returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {_site_file(directory, str(site)).name: np.asarray(array) for site, array in sites.items()}
    if (directory / "manifest.json").exists():  # a recording before: its other sites would change its identity
        for old in directory.glob("*.npy"):
            if old.name not in files and old.name != "inputs.npy":
                old.unlink()
    write_array(directory / "inputs.npy", np.asarray(inputs))
    for name, array in files.items():
        write_array(directory / name, array)
    manifest = {"sites": [str(site) for site in sites]}
    manifest.update({k: v for k, v in (("target", target), ("vocab_size", vocab_size)) if v is not None})
    write_json(directory / "manifest.json", manifest)
    return directory


def _site_file(directory: Path, site) -> Path:
    """Where a recorded site's array lies: a file directly in the recording's directory, named by the
    site (':' as '@'); a name that would lead elsewhere (a path, '..') is refused."""
    if not isinstance(site, str) or not site:
        raise ValueError(f"expected site names as strings, found {site!r}")
    name = f"{site_filename(site)}.npy"
    if "/" in site or "\\" in site or "\x00" in site or site in (".", "..") or Path(name).name != name:
        raise ValueError(f"expected a site name (a module path like blocks.0.hook_resid_post), found {site!r}: "
                         f"a site's array must lie in {directory} itself")
    return directory / name


class RecordedTarget(Target):
    def __init__(self, directory: Path):
        self.directory = directory
        manifest_path = directory / "manifest.json"
        try:
            manifest = read_json(manifest_path)
            sites = manifest["sites"]
            sites = list(sites) if isinstance(sites, (dict, list)) else None
            if not sites:
                raise ValueError("expected a non-empty 'sites' list")
            for site in sites:
                _site_file(directory, site)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TargetError(f"{manifest_path}: expected a manifest.json with a 'sites' list ({exc})") from None
        self.name = f"activations:{directory}"
        self.inputs = self._load(directory / "inputs.npy")
        tokens = np.issubdtype(self.inputs.dtype, np.integer)
        if self.inputs.ndim != 2 or len(self.inputs) == 0 or not (tokens or np.issubdtype(self.inputs.dtype, np.floating)):
            raise TargetError(f"{directory / 'inputs.npy'}: expected [N, T] integer token ids or [N, D] floats "
                              f"(N >= 1), found {self.inputs.dtype} {list(self.inputs.shape)}")
        if tokens and self.inputs.min() < 0:
            raise TargetError(f"{directory / 'inputs.npy'}: expected token ids >= 0, found {int(self.inputs.min())}")
        self.input_kind = "tokens" if tokens else "vectors"
        self.vocab_size = manifest.get("vocab_size") or (int(self.inputs.max()) + 1 if tokens else None)
        self.arrays = {}
        for site in sites:
            path = _site_file(directory, site)
            array = self._load(path)
            pattern = array.ndim == 4 and array.shape[2] == array.shape[3]  # attention [N, head, query, key]
            if len(array) != len(self.inputs) or not (array.ndim in (2, 3) or pattern) or \
                    not np.issubdtype(array.dtype, np.floating):
                raise TargetError(f"{path}: expected a float array [N, D], [N, T, D] or (an attention pattern) "
                                  f"[N, H, T, T] with N = {len(self.inputs)} rows (one per input), found "
                                  f"{array.dtype} {list(array.shape)}")
            self.arrays[str(site)] = array
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode())
        for path in sorted(directory.glob("*.npy")):  # by content: the same recording, the same identity
            try:
                digest.update(f"{path.name}:{file_sha256(path)}".encode())
            except (OSError, ValueError) as exc:
                raise TargetError(f"{path}: expected a .npy array ({exc})") from None
        self.identity = digest.hexdigest()[:32]

    @staticmethod
    def _load(path: Path) -> np.ndarray:
        try:
            open_regular(path).close()  # a FIFO or a device is refused here, not waited on by np.load
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise TargetError(f"{path}: expected a .npy array ({exc})") from None

    shift_hint = ("a recording replays only the examples it holds: record the shifted data "
                  "as a recording of its own, another activations:DIR")

    def dataset(self, n: int | None, seed: int, shift: str | None = None) -> np.ndarray:
        self.check_shift(shift)
        return np.asarray(self.inputs[: n or len(self.inputs)])

    def dataset_identity(self, n: int | None, seed: int) -> str:
        return f"{self.identity}:n={n}:seed={seed}"

    def hooks(self) -> dict[str, tuple[int, ...]]:
        return {site: tuple(a.shape[1:]) for site, a in self.arrays.items()}

    def record(self, inputs, rows, hooks):
        return {h: np.asarray(self.arrays[str(h)][np.sort(rows)][np.argsort(np.argsort(rows))], np.float32)
                for h in hooks}

    def run(self, inputs, hooks):
        raise TargetError(f"{self.name} is a recording: it can only replay the examples it holds")
