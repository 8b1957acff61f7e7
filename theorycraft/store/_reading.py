"""Reading the store: where it is, a capture's format and address (``CaptureKey``), its fixed
splits, and ``ActivationSet``, a finished capture whose files are checked before their first read."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from theorycraft.errors import StoreError
from theorycraft.files import read_json

from ._durable import file_digest, manifest_digest

FORMAT_VERSION = 3  # 2: the manifest carries its own sha256; 3: files checked by xxh3-128 (older: captured again)
CHECKSUM = "xxh3_128"  # what a manifest's per-file "digest" fields are (new_digest)
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.2  # drawn from all examples, kept where not test: ~16% of them


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else $THEORYCRAFT_CACHE, else the platform's user cache directory
    (platformdirs: ~/.cache/theorycraft on Linux, ~/Library/Caches/theorycraft on macOS)."""
    root = cache_dir or os.environ.get("THEORYCRAFT_CACHE")
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("theorycraft", appauthor=False)
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise StoreError(f"{root}: expected a directory for the activation store (--cache or THEORYCRAFT_CACHE), "
                         f"found a file")
    return root


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


@dataclass(frozen=True)
class CaptureKey:
    target: str  # the target's identity (a weights hash)
    hooks: tuple[str, ...]
    dataset: str
    dtype: str

    def digest(self) -> str:  # the store's format is part of the address: a new format, a new capture
        key = {**self.__dict__, "format": FORMAT_VERSION}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


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
            self.manifest = read_json(path)
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
            from theorycraft.spec import did_you_mean
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
