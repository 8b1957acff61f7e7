"""Checksums of an artifact directory: ``checksums.json`` holds the sha256 of each file written
into it (``theory.yaml``, ``params.safetensors``, ``scorecard.json``), recorded as each is saved
and verified before any of them is read, so a torn or corrupted artifact is reported, never used."""

from __future__ import annotations

import json
from pathlib import Path

from theorycraft.files import write_atomically
from theorycraft.errors import ArtifactError
from theorycraft.store import file_sha256

CHECKSUMS = "checksums.json"
FIT_AGAIN = "fit it again (theorycraft infer)"
FIXES = {"scorecard.json": "delete it and write it again (theorycraft score {run})"}


def _recorded(directory: Path) -> dict:
    path = directory / CHECKSUMS
    if not path.exists():
        return {}
    try:
        sums = json.loads(path.read_text())
        if not (isinstance(sums, dict) and all(isinstance(k, str) and Path(k).name == k and isinstance(v, str)
                                               for k, v in sums.items())):
            raise ValueError("expected {file name in the directory: sha256}")
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable checksum list ({exc}); the artifact cannot be trusted: "
                            f"fit it again (theorycraft infer)") from None
    return sums


def record(directory, *names: str) -> None:
    """Record the sha256 of ``names`` (files just written into ``directory``) in its checksums.json."""
    directory = Path(directory)
    sums = _recorded(directory) | {name: file_sha256(directory / name) for name in names}
    write_atomically(directory / CHECKSUMS, json.dumps(sums, indent=1, sort_keys=True) + "\n")


def verify(directory, names=None) -> None:
    """Check ``names`` (default: every file with a recorded checksum) against checksums.json; a file
    missing, unrecorded, truncated or changed by a byte is an ArtifactError naming it and the fix."""
    directory = Path(directory)
    fix = FIT_AGAIN
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: not a fitted theory directory (no such directory); run theorycraft infer")
    if not (directory / CHECKSUMS).exists():
        raise ArtifactError(f"{directory}: not a fitted theory directory (no {CHECKSUMS}: not written by "
                            f"theorycraft infer, or by a version before artifacts were checksummed); {fix}")
    sums = _recorded(directory)
    for name in sums if names is None else names:
        path, fix = directory / name, FIXES.get(name, FIT_AGAIN).format(run=directory)
        if name not in sums:
            raise ArtifactError(f"{path}: no checksum recorded in {directory / CHECKSUMS}; {fix}")
        if not path.is_file():
            raise ArtifactError(f"{path}: missing from the artifact; {fix}")
        if file_sha256(path) != sums[name]:
            raise ArtifactError(f"{path}: checksum mismatch (the file is torn, corrupted or was edited after it "
                                f"was written); {fix}")
