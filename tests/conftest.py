import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml"))
BROKEN = sorted((ROOT / "tests" / "data" / "broken").glob("*.yaml"))


@pytest.fixture
def at_root(monkeypatch):
    """Run from the repository root, so paths in messages read as a user would type them."""
    monkeypatch.chdir(ROOT)
    return ROOT


def relative(path: Path) -> str:
    return os.path.relpath(path, ROOT)
