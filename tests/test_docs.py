"""The documentation: the site builds with warnings as errors, its CLI reference is the parser's, its
links resolve, and the README stays a front door whose commands and files exist."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_docs_{name}", ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _needs_mkdocs() -> None:
    if importlib.util.find_spec("mkdocs") and importlib.util.find_spec("material"):
        return
    if os.environ.get("CI"):
        pytest.fail("CI is set and mkdocs or mkdocs-material is missing: install the 'test' extra")
    pytest.skip("mkdocs and mkdocs-material are not installed (pip install -e '.[test]')")


def test_site_builds_with_warnings_as_errors(tmp_path):
    _needs_mkdocs()
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                          str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                         capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=120)
    warnings = [line for line in run.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert run.returncode == 0 and not warnings, run.stderr
    for page in ("index.html", "cli/index.html", "language/index.html", "design/index.html"):
        assert (tmp_path / "site" / page).is_file(), page


def test_cli_reference_is_the_parsers():
    page = (ROOT / "docs" / "cli.md").read_text()
    assert page == _load("gen_cli").render(), "docs/cli.md is stale: run python docs/gen_cli.py"


def test_cli_reference_lists_every_subcommand_and_flag():
    from theorycraft.cli import build_parser

    page = _load("gen_cli").render()
    subcommands = next(a.choices for a in build_parser()._actions if isinstance(a.choices, dict))
    for name, sub in subcommands.items():
        assert f"## `theorycraft {name}`" in page
        section = page.split(f"## `theorycraft {name}`")[1].split("\n## ")[0]
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in section or f", {flag}" in section, (name, flag)


def test_links_resolve_as_in_the_repository(caplog):
    _needs_mkdocs()
    hooks = _load("hooks")
    page = ("[language](../spec/README.md#limits) [kinds](kinds.md) ![plot](bench/pareto.png) "
            "[test](../tests/test_docs.py) `[not a link](nowhere.md)` [web](https://example.org)")
    with caplog.at_level(logging.WARNING):
        out = hooks.rewrite(page, "search.md")
    assert out == ("[language](language.md#limits) [kinds](kinds.md) ![plot](bench/pareto.png) "
                   "test `[not a link](nowhere.md)` [web](https://example.org)")
    assert not caplog.records
    # from an included page, links are read from where that file sits in the repository
    assert hooks.rewrite("[a kind](../docs/kinds.md) [rasp](../examples/rasp/README.md)", "language.md") == \
        "[a kind](kinds.md) [rasp](examples-rasp.md)"
    with caplog.at_level(logging.WARNING):
        assert hooks.rewrite("see [gone](../tests/gone.py)", "search.md") == "see gone"
    assert "tests/gone.py" in caplog.text


def _readme_code() -> str:
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", README.read_text(), re.S | re.M)
    return "\n".join(body for lang, body in blocks if lang in ("bash", "python", ""))


def test_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) < 250, f"README.md has {len(lines)} lines: move detail into docs/"
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in README.read_text() and re.search(rf"^{target}:", makefile, re.M)


def test_readme_commands_and_files_exist():
    from theorycraft.cli import build_parser

    subcommands = next(a.choices for a in build_parser()._actions if isinstance(a.choices, dict))
    code = _readme_code()
    used = set(re.findall(r"^theorycraft (\w+)", code, re.M))
    assert used and used <= set(subcommands), used - set(subcommands)
    paths = set(re.findall(r"\b((?:examples|docs|tests|benchmarks)/[\w./-]+\.(?:py|yaml|md))", README.read_text()))
    assert paths and not [p for p in paths if not (ROOT / p).is_file()]
