"""Reading and writing files that someone else may have placed: a run directory, a model
directory, a recording, a store (public: every stage reads and writes through it). Nothing here follows a planted link when writing, blocks on a
FIFO or a device when reading, or reads a file larger than the caller can use.

- ``write_atomically``: the new content lands whole under the name, through a fresh temporary
  file made with ``O_EXCL`` (never a fixed, guessable name) and renamed over the name; a symlink
  at the name is replaced, its target left untouched.
- ``open_regular``: a file opened without following a final symlink and without blocking, then
  checked to be a regular file; anything else is refused, naming what was found.
- ``open_lock``: a lock file opened without following a link and without truncating anything.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

from theorycraft.errors import ArtifactError, UnsafeFileError

_KINDS = ((stat.S_ISREG, "a file"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"))
MAX_JSON_BYTES = 64 << 20  # a manifest, a config, a scorecard: never near this


def what_is(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path, mode: str = "rb", follow: bool = True):
    """``path`` opened for reading if it is a regular file. ``follow=False`` also refuses a final
    symlink (for files inside a directory someone else filled). Never blocks on a FIFO."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if not follow and exc.errno in (40, 31) and os.path.islink(path):  # ELOOP (Linux), EMLINK (BSD)
            raise UnsafeFileError(f"{path}: expected a regular file, found a symbolic link") from None
        raise
    try:
        kind = os.fstat(fd).st_mode
        if not stat.S_ISREG(kind):
            raise UnsafeFileError(f"{path}: expected a regular file, found {what_is(kind)}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path, follow: bool = True, limit: int | None = None) -> bytes:
    """A regular file's bytes; more than ``limit`` of them is refused (the caller names why)."""
    with open_regular(path, "rb", follow) as f:
        data = f.read(limit + 1 if limit is not None else -1)
    if limit is not None and len(data) > limit:
        raise UnsafeFileError(f"{path}: expected at most {limit:,} bytes, found more")
    return data


def read_json(path, follow: bool = True, limit: int = MAX_JSON_BYTES):
    """JSON from a regular file of bounded size; nesting too deep for the parser is a ValueError
    (json's own RecursionError, said as bad input)."""
    data = read_bytes(path, follow, limit)
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to read") from None


def temporary_beside(path) -> Path:
    """A fresh, empty file beside ``path`` (unguessable, made with O_EXCL), named ``.NAME.*.tmp``:
    where a writer puts content before renaming it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextmanager
def replacing(path):
    """A fresh temporary file beside ``path`` (``temporary_beside``) for a writer that
    wants a file name (safetensors, numpy); renamed over ``path`` when the block ends well, removed
    otherwise. A symlink planted at ``path`` is replaced, never written through."""
    tmp = temporary_beside(path)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomically(path, data: bytes | str) -> None:
    """``path`` gets ``data`` whole or not at all (see ``replacing``), fsync'd before the rename."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def append_line(path, line: str) -> None:
    """One whole line appended to ``path`` (made if missing), never through a planted link."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        if os.path.islink(path):
            raise UnsafeFileError(f"{path}: expected a file to append to, found a symbolic link") from None
        raise
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(line)


def output_directory(path) -> Path:
    """``path`` as a directory to write into, made if missing; a file or a FIFO there is refused
    (before any work is done), never overwritten."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ArtifactError(f"{path}: expected a directory to write into (or none yet), found "
                            f"{what_is(path.stat().st_mode)}; choose another --out (library: out_dir)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot make the directory ({exc.strerror}); choose another --out (library: out_dir)") from None
    return path


def open_lock(path):
    """A lock file, created if missing, opened without following a link or truncating a target."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafeFileError(f"{path}: expected a lock file, found a symbolic link") from None
        raise exc
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        os.close(fd)
        raise UnsafeFileError(f"{path}: expected a lock file, found {what_is(kind)}")
    return os.fdopen(fd, "r+b")
