"""The store's catalogue: which capture a request names, without loading the target; and the
captures held (``theorycraft cache ls|verify|rm``).

A capture's key (``store.CaptureKey``) hashes the target's weights and the exact data fed to it,
so computing it means loading the model and building the dataset. A *request* names the same
capture cheaply: the target reference, the identity of the files behind it (path, size, mtime of
its weights, its adapter's code, the corpus), the sites, n, data seed, dtype and shift. When a
capture lands, ``CACHE/index/REQUEST.json`` records which key the request led to; a later run with
the same request opens that capture directly (its manifest checked as always). A changed weights
file or corpus changes the request, so the index is asked nothing it could answer wrongly; it then
falls back to the full key (and records the new answer).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from theorycraft.errors import StoreError
from theorycraft.files import read_json
from theorycraft.store import FORMAT_VERSION, ActivationSet, _lock_file, cache_root, write_json

INDEX = "index"


@dataclass(frozen=True)
class Request:
    """What a capture is asked for, in terms known before any target loads. ``source`` comes from
    the target's adapter (``targets.source_identity``); hooks are sorted strings."""

    source: dict
    hooks: tuple[str, ...]
    n: int | None
    seed: int
    dtype: str
    shift: str | None

    def digest(self) -> str:
        body = {**asdict(self), "format": FORMAT_VERSION}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20]

    def same_data_but_n(self, other: "Request") -> bool:
        """``other`` records these sites (maybe more) from the same target, data seed, dtype and shift."""
        return (self.source == other.source and (self.seed, self.dtype, self.shift) == (other.seed, other.dtype, other.shift)
                and set(self.hooks) <= set(other.hooks))


def _entries(root: Path):
    for path in sorted((root / INDEX).glob("*.json")):
        try:
            entry = json.loads(path.read_text())
            request = Request(**{**entry["request"], "hooks": tuple(entry["request"]["hooks"])})
            yield path, request, str(entry["key"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged entry is only a lost shortcut


def _open(root: Path, key: str, request: Request) -> ActivationSet | None:
    """The capture ``key`` if it is complete and holds what ``request`` asks for; else None."""
    if not (root / key / "manifest.json").exists():
        return None
    try:
        acts = ActivationSet(root / key)
    except StoreError:
        return None  # the full path reports it, and captures again
    if acts.manifest["dtype"] != request.dtype or not set(request.hooks) <= set(acts.manifest["key"]["hooks"]):
        return None
    return acts


def recall(request: Request, cache_dir=None) -> ActivationSet | None:
    """The capture this exact request led to before, if it is still whole in the store."""
    root = cache_root(cache_dir)
    try:
        entry = json.loads((root / INDEX / f"{request.digest()}.json").read_text())
    except (OSError, ValueError):
        return None
    return _open(root, str(entry.get("key")), request) if isinstance(entry, dict) else None


def remember(request: Request, acts: ActivationSet, cache_dir=None) -> None:
    """Record that ``request`` is answered by ``acts`` (a capture in the store at ``cache_dir``)."""
    root = cache_root(cache_dir)
    if acts.directory.parent.resolve() != root.resolve():
        return  # a capture outside this store is named by its directory, not indexed
    (root / INDEX).mkdir(parents=True, exist_ok=True)
    write_json(root / INDEX / f"{request.digest()}.json", {"request": asdict(request), "key": acts.directory.name})


def compatible(request: Request, cache_dir=None) -> list[tuple[Request, ActivationSet]]:
    """Captures in the store of the same target, data seed, dtype and shift holding the request's
    sites, of any n; the largest first."""
    root = cache_root(cache_dir)
    found, seen = [], set()
    for _, other, key in _entries(root):
        if key not in seen and request.same_data_but_n(other) and (acts := _open(root, key, request)) is not None:
            seen.add(key)
            found.append((other, acts))
    return sorted(found, key=lambda pair: -pair[1].n)


# --- the captures held -------------------------------------------------------------------------

@dataclass(frozen=True)
class Held:
    """One capture directory in the store, as ``cache ls`` shows it."""

    key: str
    bytes: int
    complete: bool
    target: str
    sites: tuple[str, ...]
    n: int | None
    seed: int | None
    dtype: str | None
    shift: str | None
    modified: float


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


CAPTURE_NAME = re.compile(r"[0-9a-f]{20}(\.part-\d+-of-\d+)?")  # CaptureKey.digest(), or one part of it


def is_capture(directory: Path) -> bool:
    """A directory the store made: named by a capture key, not a link, and holding a capture's
    manifest, or the progress or lock of one being written. Nothing else in a store is listed or removed,
    so a --cache pointed at the wrong directory lists nothing and deletes nothing."""
    return (CAPTURE_NAME.fullmatch(directory.name) is not None and not directory.is_symlink() and directory.is_dir()
            and any((directory / name).is_file() and not (directory / name).is_symlink()
                    for name in ("manifest.json", "progress.json", ".lock")))


def held(cache_dir=None) -> list[Held]:
    """Every capture directory in the store (incomplete ones too), oldest first."""
    root = cache_root(cache_dir)
    out = []
    for directory in sorted(p for p in root.iterdir() if is_capture(p)) if root.is_dir() else ():
        manifest_path = directory / "manifest.json"
        try:
            manifest = read_json(manifest_path, follow=False)
            dataset = manifest["dataset"]
            out.append(Held(directory.name, _size(directory), True, manifest["target"]["name"],
                            tuple(manifest["sites"]), manifest["n_examples"], dataset.get("seed"), manifest["dtype"],
                            dataset.get("shift"), manifest_path.stat().st_mtime))
        except (OSError, ValueError, KeyError, TypeError):  # interrupted, or unreadable: shown as incomplete
            out.append(Held(directory.name, _size(directory), False, "?", (), None, None, None, None,
                            directory.stat().st_mtime))
    return sorted(out, key=lambda h: h.modified)


def find(ref: str | os.PathLike, cache_dir=None) -> ActivationSet:
    """A capture named by its key (or a unique prefix of it) in the store, or by its directory."""
    root = cache_root(cache_dir)
    path = Path(ref).expanduser()
    if (path / "manifest.json").exists():
        return ActivationSet(path)
    name = str(ref)
    matches = sorted(p for p in root.glob(f"{name}*") if p.is_dir() and p.name != INDEX) if name and "/" not in name else []
    matches = [root / name] if root / name in matches else matches  # a whole key, not its partial stores
    if len(matches) == 1:
        if not (matches[0] / "manifest.json").exists():
            raise StoreError(f"capture {matches[0].name} in {root} is incomplete (an interrupted capture: run it "
                             f"again to resume it, or theorycraft cache rm {matches[0].name})")
        return ActivationSet(matches[0])
    if len(matches) > 1:
        raise StoreError(f"capture '{name}' is ambiguous in {root}: {', '.join(p.name for p in matches)}; "
                         f"give more of the key")
    raise StoreError(f"no capture '{name}' in {root}, and no directory with a manifest.json at {path}; "
                     f"list the store's captures with theorycraft cache ls (--cache DIR for another store)")


def remove(key: str, cache_dir=None) -> Held:
    """Delete one capture (named by key or unique prefix) and the index entries that lead to it.
    A capture being written (its lock held) is refused."""
    root = cache_root(cache_dir)
    matches = [h for h in held(cache_dir) if h.key.startswith(key)] if key else []
    matches = [h for h in matches if h.key == key] or matches  # a whole key, not its partial stores
    if len(matches) != 1:
        raise StoreError(f"no capture '{key}' in {root}" if not matches else
                         f"capture '{key}' is ambiguous in {root}: {', '.join(h.key for h in matches)}")
    victim = matches[0]
    directory = root / victim.key
    lock_path = directory / ".lock"
    if lock_path.exists() or lock_path.is_symlink():
        with _lock_file(directory) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"{directory}: a capture is being written there now; remove it once that ends") from None
    for path, _, entry_key in _entries(root):
        if entry_key == victim.key:
            path.unlink(missing_ok=True)
    shutil.rmtree(directory)
    return victim


def date_text(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))
