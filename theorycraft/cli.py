"""The ``theorycraft`` command. Exit codes: 0 ok, 1 invalid input, 2 usage error."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from theorycraft.spec import check_theory, json_schema, outline

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for path in args.files:
        theory, diagnostics = check_theory(path)
        for d in diagnostics:
            print(d, file=sys.stderr)
        if theory is None:
            status = EXIT_INVALID
            errors = sum(d.severity == "error" for d in diagnostics)
            print(f"{path}: invalid ({errors} error{'s' * (errors != 1)})")
        else:
            print(f"{path}: ok (theory '{theory.name}', {len(theory.components)} components)")
    return status


def _explain(args: argparse.Namespace) -> int:
    theory, diagnostics = check_theory(args.file)
    for d in diagnostics:
        print(d, file=sys.stderr)
    if theory is None:
        return EXIT_INVALID
    print(outline(theory))
    return EXIT_OK


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="theorycraft", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, run: Callable, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(run=run)
        return sub

    command("validate", _validate, "check theory files; report every problem as file:line:col").add_argument(
        "files", nargs="+", metavar="FILE")
    command("explain", _explain, "outline a theory: what reads what, what predicts what").add_argument(
        "file", metavar="FILE")
    command("schema", _schema, "print the JSON Schema of the theory language")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on usage errors
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
