"""Metrics of fits and search steps: one JSON object a line in ``DIR/metrics.jsonl`` (each line
written whole as it comes, so a running or interrupted job can be read), and each number as a
TensorBoard scalar in ``DIR/tensorboard/`` where the ``tensorboard`` package is installed (unless
``THEORYCRAFT_TENSORBOARD=0``)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from pathlib import Path

from theorycraft.files import append_line

FILE = "metrics.jsonl"
TENSORBOARD_ENV = "THEORYCRAFT_TENSORBOARD"  # "0": never write TensorBoard events


class Metrics:
    """Appends records ``{"event", "step", "time", **values}`` to ``directory/metrics.jsonl``;
    ``directory=None`` writes nothing. ``tensorboard``: also write the numbers as scalars
    ``EVENT/NAME`` there (default: when the tensorboard package is installed and
    ``THEORYCRAFT_TENSORBOARD`` is not "0")."""

    def __init__(self, directory=None, tensorboard: bool | None = None):
        self.path = None if directory is None else Path(directory) / FILE
        self._board = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard is None:
            tensorboard = os.environ.get(TENSORBOARD_ENV, "") != "0" and importlib.util.find_spec("tensorboard") is not None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
            self._board = SummaryWriter(str(Path(directory) / "tensorboard"))

    def write(self, event: str, step: int, **values) -> None:
        if self.path is None:
            return
        record = {"event": event, "step": int(step), "time": round(time.time(), 3), **values}
        append_line(self.path, json.dumps(record, default=float) + "\n")  # one whole line per write
        if self._board is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._board.add_scalar(f"{event}/{name}", value, int(step))
            self._board.flush()


def read_metrics(directory) -> list[dict]:
    """Every record of ``directory/metrics.jsonl``, in order (a torn last line, from a killed job,
    is left out)."""
    records = []
    for line in (Path(directory) / FILE).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
