"""Errors a user can cause and fix; the CLI prints them without a traceback and exits 1."""

from theorycraft.spec import TheoryError


class TargetError(Exception):
    """A target that cannot load or cannot provide what was asked; the message says why and what to do."""


class StoreError(Exception):
    """A capture that is missing, torn or corrupted; the message names the file and the fix."""


class FitError(Exception):
    """A fit that cannot start or went wrong (shapes, divergence); the message names the part and the fix."""


USER_ERRORS = (TheoryError, TargetError, StoreError, FitError)
