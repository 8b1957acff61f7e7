"""The CLI's face: --version, every subcommand's help (defaults and two examples that parse), and
theory files validated before torch and jax are imported."""

import argparse
import glob
import shlex
import subprocess
import sys

import pytest

import theorycraft
from theorycraft.cli import build_parser, main


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"theorycraft {theorycraft.__version__}"


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_subcommand_help_shows_defaults_and_two_examples_that_parse(name, at_root):
    sub = _subcommands()[name]
    text = sub.format_help()
    examples = text.split("\nexamples:\n", 1)[1].strip().splitlines()
    assert len(examples) >= 2 and all(line.strip().startswith(f"theorycraft {name}") for line in examples)
    for line in examples:  # each example is a command the parser accepts, its example files exist
        words = shlex.split(line.split("|")[0].split(">")[0])[1:]
        paths = [w for w in words if w.startswith("examples/")]
        assert all(glob.glob(p) for p in paths), line
        build_parser().parse_args(words)
    for action in sub._actions:  # a non-trivial default is said in the option's help
        if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS):
            shown = sub._get_formatter()._format_action(action)
            assert "default" in shown, (name, action.dest)


def test_infer_default_is_shown_in_help():
    text = _subcommands()["infer"].format_help()
    assert "(default: 2000)" in " ".join(text.split()) and "(default: 0)" in text  # --max-steps, --seed


WRAPPER = """
import sys
from theorycraft.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "jax") if m in sys.modules)
print("HEAVY", heavy, file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("command", [["infer"], ["check"], ["search"], ["capture"], ["search", "examples/search_modadd.yaml", "--compare"]])
def test_a_bad_theory_is_reported_before_torch_and_jax_load(command, tmp_path, at_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text("theory: x\ntarget: builtin:modadd-p113\ncomponents:\n  a: {kind: fourrier}\n")
    done = subprocess.run([sys.executable, "-c", WRAPPER, *command, str(bad)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stderr
    assert f"{bad}:4:13: error: unknown component kind 'fourrier'" in done.stderr
    assert "HEAVY []" in done.stderr
