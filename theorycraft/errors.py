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
    """An argument out of its range (``n=-5``, ``learning_rate=0``), or arguments that do not go
    together. ``{name}`` in the message is a parameter: said by its name in Python, by its flag
    on the command line (``said``)."""

    def __init__(self, message: str, *, params: tuple[str, ...] = ()):
        self.template, self.params = message, tuple(params)
        super().__init__(self.said(str))

    def said(self, spell) -> str:
        """The message with each parameter spelled by ``spell(name)``."""
        text = self.template
        for name in self.params:
            text = text.replace("{" + name + "}", spell(name))
        return text


class UnsafeFileError(ValueError):
    """A path that is not the regular file it must be: a FIFO, a device, a directory, or a symbolic
    link where theorycraft writes or reads its own files; the message names what was found."""


USER_ERRORS = (TheoryError, TargetError, StoreError, FitError, EvaluationError, UnsafeFileError)
