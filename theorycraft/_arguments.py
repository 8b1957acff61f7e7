"""The numeric arguments of the library and the CLI, with their ranges: one table, checked by the
CLI's parser (a usage error) and by the library functions (an ``ArgumentError``), with one message."""

from __future__ import annotations

import argparse
import math
import numbers
from typing import Callable, NamedTuple

from theorycraft.errors import ArgumentError


class Range(NamedTuple):
    integer: bool
    low: float
    low_open: bool = False  # low itself excluded
    high: float | None = None
    high_open: bool = False

    def describe(self) -> str:
        what = "an integer" if self.integer else "a finite number"
        low = f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
        if self.high is None:
            return f"{what} {low}"
        return f"{what} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def holds(self, value) -> bool:  # numpy scalars count; True and False do not
        number = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below


RANGES = {
    "n": Range(True, 1),
    "seed": Range(True, 0),
    "batch_size": Range(True, 1),
    "max_steps": Range(True, 1),
    "learning_rate": Range(False, 0, low_open=True),
    "tolerance": Range(False, 0),
    "restarts": Range(True, 1),
    "limit": Range(True, 1),
    "top": Range(True, 1),
    "worst": Range(True, 0),
    "tries": Range(True, 1),
    "model_shards": Range(True, 1),
    "processes": Range(True, 1),
    "budget_bits": Range(False, 0, low_open=True),
    "budget_minutes": Range(False, 0, low_open=True),
    "target_coverage": Range(False, 0, low_open=True, high=1, high_open=True),
    "seq_len": Range(True, 2),  # tokens per window of an hf: target (a next token needs two)
}


def message(name: str, value) -> str:
    return f"{name} must be {RANGES[name].describe()}, got {value!r}"


def check(name: str, value, *, optional: bool = False):
    """``value`` if it is in ``name``'s range (or None where ``optional``), else an ArgumentError."""
    if value is None and optional:
        return None
    if not RANGES[name].holds(value):
        raise ArgumentError(message(name, value))
    return int(value) if RANGES[name].integer else float(value)


def flag(name: str):
    """An argparse ``type=`` for ``name``: a bad value is a usage error with the same message."""
    def parse(text: str):
        try:
            value = int(text) if RANGES[name].integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(message(name, text)) from None
        try:
            return check(name, value)
        except ArgumentError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = name  # argparse names the type in some messages
    return parse


def site(text):
    """A site (hook point) named by the user, parsed once; a malformed name is an ArgumentError."""
    from theorycraft.spec import HookPoint

    if isinstance(text, HookPoint):
        return text
    try:
        return HookPoint.parse(text)
    except (ValueError, TypeError):
        raise ArgumentError(f"expected a site (hook point) like 'blocks.0.mlp.hook_post' or "
                            f"'encoder.layer.3.output:input', got {text!r}") from None


def site_flag(text: str):
    try:
        return site(text)
    except ArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def shift(name):
    """A shift's name (``--shift NAME``), or None for the target's own data; the target checks
    that it knows the name."""
    if name is None or (isinstance(name, str) and name):
        return name
    raise ArgumentError(f"shift must be the name of one of the target's shifts, like 'dense' (theorycraft shifts "
                        f"TARGET lists them), got {name!r}")


_MEMORY_UNITS = {"": 1, "K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12,
                 "KI": 2 ** 10, "MI": 2 ** 20, "GI": 2 ** 30, "TI": 2 ** 40}


def memory(value, *, optional: bool = False, name: str = "max_memory"):
    """A memory size in bytes (``--max-memory``, ``--judge-cache``): a positive integer of bytes, or
    text like '4G', '512M', '1.5GB' (powers of 1000) or '2GiB' (powers of 1024); an ArgumentError
    (naming the argument ``name``) otherwise."""
    import re

    if value is None and optional:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0:
        return int(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?)?B?\s*", value, re.IGNORECASE) if isinstance(value, str) else None
    size = float(match[1]) * _MEMORY_UNITS[(match[2] or "").upper()] if match else 0
    if not 1 <= size < 2 ** 63:
        raise ArgumentError(f"{name} must be a size in bytes like 4G, 512M, 1.5GB or 2GiB (at least 1 byte), "
                            f"got {value!r}")
    return int(size)


def memory_flag(name: str) -> Callable[[str], int]:
    """An argparse type for a memory size (``memory``), its errors naming ``name``."""
    def parse(text: str) -> int:
        try:
            return memory(text, name=name)
        except ArgumentError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = name
    return parse


def bytes_text(n: float) -> str:
    """A size for messages: '812 bytes', '6.0 KB', '4.3 GB' (powers of 1000)."""
    unit = "bytes"
    for bigger in ("KB", "MB", "GB", "TB", "PB", "EB"):
        if n < 1000:
            break
        n, unit = n / 1000, bigger
    return f"{n:,.0f} bytes" if unit == "bytes" else f"{n:,.1f} {unit}"

def include_path_flag(text: str) -> str:
    """``--include-path DIR``: a directory theory files may include from (besides their own)."""
    import os

    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"expected a directory theory files may include from, got {text!r} "
                                         f"(not a directory)")
    return text


def part_flag(text: str) -> tuple[int, int]:
    """An argparse ``type=`` for ``--part K/N``: part K (from 0) of N."""
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and int(k) < int(n)):
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N (part K of N, counted from 0, e.g. 0/4), "
                                         f"found {text!r}")
    return int(k), int(n)
