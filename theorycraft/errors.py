"""Errors a user can cause and fix; the CLI prints them without a traceback and exits 1 (2 for
an ``ArgumentError``: a bad argument is a usage error)."""

from theorycraft.spec import EvaluationError, TheoryError


class TargetError(Exception):
    """A target that cannot load or cannot provide what was asked; the message says why and what to do."""


class StoreError(Exception):
    """A capture that is missing, torn or corrupted; the message names the file and the fix."""


class FitError(Exception):
    """A fit that cannot start or went wrong (shapes, divergence); the message names the part and the fix."""


class ArtifactError(FitError):
    """An artifact directory (theory.yaml, params.safetensors, scorecard.json) that is missing,
    torn or corrupted; the message names the file and the fix."""


class ArgumentError(ValueError):
    """An argument out of its range (``n=-5``, ``learning_rate=0``); the message is the one the CLI
    prints for the matching flag."""


class UnsafeFileError(ValueError):
    """A path that is not the regular file it must be: a FIFO, a device, a directory, or a symbolic
    link where theorycraft writes or reads its own files; the message names what was found."""


USER_ERRORS = (TheoryError, TargetError, StoreError, FitError, EvaluationError, UnsafeFileError)
