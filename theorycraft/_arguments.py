"""The arguments of the library and the CLI, with their ranges: the configs' fields' (theorycraft.configs)
and those of commands that are no stage's, checked by the CLI's parser (a usage error) and by the
library functions (an ``ArgumentError``), with one message."""

from __future__ import annotations

import argparse
from typing import Callable

from theorycraft.configs import CONFIGS, COUNT, SEED, Range, memory, params, site
from theorycraft.errors import ArgumentError


def _config_ranges() -> dict[str, Range]:
    """Each config field's range by its name and by its keyword, checked to be one range a name."""
    ranges: dict[str, Range] = {}
    for config in CONFIGS:
        for dest, (f, p) in params(config).items():
            for name in {f.name, dest}:
                if p.range is not None and ranges.setdefault(name, p.range) != p.range:
                    raise AssertionError(f"{name} has two ranges in theorycraft.configs")
    return ranges


# the configs' fields, and the arguments of commands that are no stage's (diagnose, check, infer's processes)
RANGES = {**_config_ranges(), "limit": COUNT, "top": COUNT, "worst": SEED, "processes": COUNT}


def message(name: str, value) -> str:
    return f"{name} must be {RANGES[name].describe()}, got {value!r}"


def check(name: str, value, *, optional: bool = False):
    """``value`` if it is in ``name``'s range (or None where ``optional``), else an ArgumentError."""
    if value is None and optional:
        return None
    return RANGES[name].check(name, value)


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


def site_flag(text: str):
    try:
        return site(text)
    except ArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def memory_flag(name: str) -> Callable[[str], int]:
    """An argparse type for a memory size (``memory``), its errors naming ``name``."""
    def parse(text: str) -> int:
        try:
            return memory(text, name=name)
        except ArgumentError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = name
    return parse


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
