"""The store: one directory of captures, and the object that owns it. ``Store(cache_dir)`` answers
a capture request from what it holds (reuse), keeps the request index, captures what it lacks,
and lists, finds, verifies and removes captures (``theorycraft cache ls|verify|rm``).

A capture's key (``CaptureKey``) hashes the target's weights and the exact data fed to it,
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
from typing import Callable

from theorycraft.errors import StoreError
from theorycraft.files import read_json

from ._capture import capture
from ._durable import lock_file, write_json
from ._reading import FORMAT_VERSION, ActivationSet, cache_root

INDEX = "index"
CAPTURE_NAME = re.compile(r"[0-9a-f]{20}(\.part-\d+-of-\d+)?")  # CaptureKey.digest(), or one part of it


def is_capture(directory: Path) -> bool:
    """A directory the store made: named by a capture key, not a link, and holding a capture's
    manifest, or the progress or lock of one being written. Nothing else in a store is listed or removed,
    so a --cache pointed at the wrong directory lists nothing and deletes nothing."""
    return (CAPTURE_NAME.fullmatch(directory.name) is not None and not directory.is_symlink() and directory.is_dir()
            and any((directory / name).is_file() and not (directory / name).is_symlink()
                    for name in ("manifest.json", "progress.json", ".lock")))


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


class Store:
    """One activation store (``cache_dir``, else $THEORYCRAFT_CACHE, else the user cache): its
    captures and the request index that leads to them. It alone decides whether a capture is
    reused, and records what a new one answers."""

    def __init__(self, cache_dir=None):
        self.root = cache_root(cache_dir)

    # --- reuse ------------------------------------------------------------------------------------

    def reuse(self, request: Request, log: Callable[[str], None]) -> ActivationSet | None:
        """A capture that answers ``request``: the one it led to before, one of the same data
        holding more sites, or (no n asked for) one of another size, said through ``log``. None
        if a new capture is needed; ``log`` then hears of the sizes the store holds."""
        acts = self.recall(request)
        if acts is not None:
            return acts
        others = self.compatible(request)
        same = [acts for other, acts in others if other.n == request.n]
        if same:
            return same[0]
        held = ", ".join(f"{acts.key} ({acts.n} examples)" for _, acts in others)
        if others and request.n is None:
            acts = others[0][1]
            log(f"using capture {acts.key} of these sites ({acts.n} examples, data seed {request.seed}), as --n was "
                f"not given; pass --n N for a capture of N examples" + (f" (the store holds: {held})" if len(others) > 1
                                                                        else ""))
            return acts
        if others:
            log(f"capturing {request.n} examples anew; the store holds these sites with data seed {request.seed} at "
                f"other sizes: {held} (reuse one with --capture KEY)")
        return None

    def capture(self, target, hooks, config, *, request: Request | None = None, progress: bool = True,
                part: tuple[int, int] | None = None) -> ActivationSet | Path:
        """Record ``hooks`` of ``target`` as ``config`` (a CaptureConfig) says, or open the capture
        of the same key; indexed under ``request`` when given (a whole capture in this store)."""
        acts = capture(target, hooks, n=config.n, seed=config.seed, dtype=config.dtype, cache_dir=self.root,
                       batch_size=config.batch_size, progress=progress, shift=config.shift, part=part)
        if request is not None and isinstance(acts, ActivationSet):
            self.remember(request, acts)
        return acts

    def recall(self, request: Request) -> ActivationSet | None:
        """The capture this exact request led to before, if it is still whole in the store."""
        try:
            entry = read_json(self.root / INDEX / f"{request.digest()}.json")
        except (OSError, ValueError):
            return None
        return self._open(str(entry.get("key")), request) if isinstance(entry, dict) else None

    def remember(self, request: Request, acts: ActivationSet) -> None:
        """Record that ``request`` is answered by ``acts`` (a capture in this store)."""
        if acts.directory.parent.resolve() != self.root.resolve():
            return  # a capture outside this store is named by its directory, not indexed
        (self.root / INDEX).mkdir(parents=True, exist_ok=True)
        write_json(self.root / INDEX / f"{request.digest()}.json", {"request": asdict(request),
                                                                    "key": acts.directory.name})

    def compatible(self, request: Request) -> list[tuple[Request, ActivationSet]]:
        """Captures of the same target, data seed, dtype and shift holding the request's sites, of
        any n; the largest first."""
        found, seen = [], set()
        for _, other, key in self._entries():
            if key not in seen and request.same_data_but_n(other) and (acts := self._open(key, request)) is not None:
                seen.add(key)
                found.append((other, acts))
        return sorted(found, key=lambda pair: -pair[1].n)

    def _entries(self):
        for path in sorted((self.root / INDEX).glob("*.json")):
            try:
                entry = read_json(path)
                request = Request(**{**entry["request"], "hooks": tuple(entry["request"]["hooks"])})
                yield path, request, str(entry["key"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a damaged entry is only a lost shortcut

    def _open(self, key: str, request: Request) -> ActivationSet | None:
        """The capture ``key`` if it is complete and holds what ``request`` asks for; else None."""
        if not (self.root / key / "manifest.json").exists():
            return None
        try:
            acts = ActivationSet(self.root / key)
        except StoreError:
            return None  # the full path reports it, and captures again
        if acts.manifest["dtype"] != request.dtype or not set(request.hooks) <= set(acts.manifest["key"]["hooks"]):
            return None
        return acts

    # --- the captures held --------------------------------------------------------------------------

    def held(self) -> list[Held]:
        """Every capture directory in the store (incomplete ones too), oldest first."""
        out = []
        root = self.root
        for directory in sorted(p for p in root.iterdir() if is_capture(p)) if root.is_dir() else ():
            manifest_path = directory / "manifest.json"
            try:
                manifest = read_json(manifest_path, follow=False)
                dataset = manifest["dataset"]
                out.append(Held(directory.name, _size(directory), True, manifest["target"]["name"],
                                tuple(manifest["sites"]), manifest["n_examples"], dataset.get("seed"),
                                manifest["dtype"], dataset.get("shift"), manifest_path.stat().st_mtime))
            except (OSError, ValueError, KeyError, TypeError):  # interrupted, or unreadable: shown as incomplete
                out.append(Held(directory.name, _size(directory), False, "?", (), None, None, None, None,
                                directory.stat().st_mtime))
        return sorted(out, key=lambda h: h.modified)

    def find(self, ref: str | os.PathLike) -> ActivationSet:
        """A capture named by its key (or a unique prefix of it) in the store, or by its directory."""
        root = self.root
        path = Path(ref).expanduser()
        if (path / "manifest.json").exists():
            return ActivationSet(path)
        name = str(ref)
        matches = (sorted(p for p in root.glob(f"{name}*") if p.is_dir() and p.name != INDEX)
                   if name and "/" not in name else [])
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

    def remove(self, key: str) -> Held:
        """Delete one capture (named by key or unique prefix) and the index entries that lead to
        it. A capture being written (its lock held) is refused."""
        root = self.root
        matches = [h for h in self.held() if h.key.startswith(key)] if key else []
        matches = [h for h in matches if h.key == key] or matches  # a whole key, not its partial stores
        if len(matches) != 1:
            raise StoreError(f"no capture '{key}' in {root}" if not matches else
                             f"capture '{key}' is ambiguous in {root}: {', '.join(h.key for h in matches)}")
        victim = matches[0]
        directory = root / victim.key
        lock_path = directory / ".lock"
        if lock_path.exists() or lock_path.is_symlink():
            with lock_file(directory) as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise StoreError(f"{directory}: a capture is being written there now; remove it once that "
                                     f"ends") from None
        for path, _, entry_key in self._entries():
            if entry_key == victim.key:
                path.unlink(missing_ok=True)
        shutil.rmtree(directory)
        return victim


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def date_text(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))
