"""Progress bars: tqdm.auto (a widget in a notebook, text on a terminal), and log lines written
above a live bar instead of through it."""

from __future__ import annotations

from typing import Callable


def bar(total: int | None = None, *, desc: str | None = None, unit: str = "it", shown: bool | None = True,
        leave: bool = True):
    """A tqdm.auto bar on stderr; ``shown=None``: only on a terminal, ``False``: never."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=None if shown is None else not shown,
                dynamic_ncols=True, leave=leave)


def above(progress, log: Callable[[str], None]) -> Callable[[str], None]:
    """``log``, writing each line above ``progress``'s bar (which redraws under it)."""
    def write(line: str) -> None:
        if progress.disable:
            log(line)
        else:
            with progress.external_write_mode():
                log(line)
    return write
