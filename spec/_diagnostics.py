"""Diagnostics: every problem in a theory file, with where it is and what would fix it."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Collection, Iterable, Literal


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem, printed as ``path:line:col: severity: message`` (line and col 1-based)."""

    path: str
    line: int
    col: int
    severity: Literal["error", "warning"]
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.severity}: {self.message}"


class TheoryError(Exception):
    """Raised when a theory file is invalid; carries every diagnostic found, not just the first."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = tuple(sorted(diagnostics))
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "error")


MAX_SUGGESTION_CHOICES = 1_000  # comparing a word with more would cost more than a hint is worth


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close match exists among at most MAX_SUGGESTION_CHOICES
    choices, else ``''``."""
    if not isinstance(word, str) or len(word) > 100:
        return ""
    choices = choices if isinstance(choices, Collection) else list(choices)
    if len(choices) > MAX_SUGGESTION_CHOICES:
        return ""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def describe(value: object) -> str:
    """A short, readable rendering of a found value for 'expected X, found Y' messages."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
