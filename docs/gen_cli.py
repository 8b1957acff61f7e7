"""Write docs/cli.md, the CLI reference, from theorycraft's own argument parser (read at run time, so
flags added or changed in the code show up here): ``python docs/gen_cli.py``. tests/test_docs.py
fails when the committed page differs from what this writes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "cli.md"
HEADER = """# CLI reference

Generated from the parser by `python docs/gen_cli.py`; do not edit by hand. `theorycraft COMMAND --help`
prints the same, and [Getting started](getting-started.md#cli-tour) walks through the commands. Exit
codes: 0 ok, 1 invalid input, 2 usage error, 3 internal error.
"""


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action.choices, dict):  # the subparsers action: name -> parser
            return dict(action.choices)
    return {}


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _synopsis(prog: str, sub: argparse.ArgumentParser) -> str:
    words = [prog]
    for action in sub._actions:
        if action.option_strings or isinstance(action.choices, dict):
            continue
        name = action.metavar or action.dest
        words.append({"+": f"{name} ...", "*": f"[{name} ...]", "?": f"[{name}]"}.get(action.nargs, name))
    if _subcommands(sub):
        words.append("ACTION")
    if any(a.option_strings and a.dest != "help" for a in sub._actions):
        words.append("[options]")
    return " ".join(words)


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:
        text = text % dict(vars(action), prog=prog)
    if action.choices and not isinstance(action.choices, dict):
        text += f" One of: {', '.join(map(str, action.choices))}."
    return text


def _default(action: argparse.Action) -> str:
    value = action.default
    if value is None or value is False or value == [] or value == argparse.SUPPRESS:
        return ""
    return f"`{value}`"


def _flag(action: argparse.Action) -> str:
    if not action.option_strings:
        return action.metavar or action.dest
    return ", ".join(action.option_strings) + (f" {action.metavar or action.dest.upper()}" if action.nargs != 0 else "")


def _table(sub: argparse.ArgumentParser, prog: str) -> list[str]:
    rows = [f"| `{_flag(a)}` | {_default(a)} | {_cell(_help(a, prog))} |"
            for a in sub._actions if a.dest != "help" and not isinstance(a.choices, dict)]
    return ["| argument | default | what it does |", "|---|---|---|", *rows, ""] if rows else []


def _command(prog: str, sub: argparse.ArgumentParser, level: str = "##") -> list[str]:
    lines = [f"{level} `{prog}`", "", _cell(sub.description or ""), "", "```", _synopsis(prog, sub), "```", ""]
    lines += _table(sub, prog)
    if sub.epilog:
        examples = [line.strip() for line in sub.epilog.splitlines()[1:] if line.strip()]
        lines += ["Examples:", "", "```bash", *examples, "```", ""]
    for action, action_parser in _subcommands(sub).items():
        lines += _command(f"{prog} {action}", action_parser, level + "#")
    return lines


def render() -> str:
    """The page, from the parser as the installed theorycraft builds it."""
    from theorycraft.cli import build_parser

    parser = build_parser()
    lines = [HEADER]
    for name, sub in _subcommands(parser).items():
        lines += _command(f"theorycraft {name}", sub)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    del args
    PAGE.write_text(render())
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
