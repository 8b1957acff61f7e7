"""Table-driven: each broken theory file lists, in '# expect:' comments, the exact diagnostics
validation must report for it (all of them, in order)."""

import os
import re
import subprocess
import sys

import pytest

from conftest import BROKEN, EXAMPLES, relative
from theorycraft.cli import main
from theorycraft.spec import TheoryError, check_theory, load_theory, parse_theory

LINE = re.compile(r"^[^:]+:\d+:\d+: (error|warning): .+$")


def expected_diagnostics(path) -> list[str]:
    here = relative(path)
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("# expect: "):
            text = line[len("# expect: "):]
            # "12:5: ..." is in this file; "parts/x.yaml:3:5: ..." in a file next to it
            out.append(f"{here}:{text}" if text[0].isdigit() else
                       os.path.normpath(os.path.join(os.path.dirname(here), text.split(":", 1)[0])) + ":" +
                       text.split(":", 1)[1])
    return out


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_broken_file_reports_exactly_its_problems(path, at_root):
    expected = expected_diagnostics(path)
    assert expected, "a broken file must say what it expects"
    theory, diagnostics = check_theory(relative(path))
    assert theory is None
    assert [str(d) for d in diagnostics] == expected


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_cli_validate_exits_1_with_one_line_per_problem(path, at_root, capsys):
    assert main(["validate", relative(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(LINE.match(line) for line in err), err
    assert len(err) == len(expected_diagnostics(path))


def test_cli_is_a_real_process_without_traceback(at_root):
    broken = [relative(p) for p in BROKEN]
    run = subprocess.run([sys.executable, "-m", "theorycraft.cli", "validate", *broken],
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr + run.stdout
    assert sum(bool(LINE.match(l)) for l in run.stderr.splitlines()) == sum(
        len(expected_diagnostics(p)) for p in BROKEN)


def test_cli_exit_codes(at_root, capsys):
    assert main(["validate", *map(relative, EXAMPLES)]) == 0
    assert main(["validate", relative(EXAMPLES[0]), relative(BROKEN[0])]) == 1
    with pytest.raises(SystemExit) as usage:
        main(["validate"])
    assert usage.value.code == 2
    with pytest.raises(SystemExit) as unknown:
        main(["frobnicate"])
    assert unknown.value.code == 2


def test_missing_file_is_an_error_not_a_traceback(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_load_theory_raises_with_every_error(at_root):
    with pytest.raises(TheoryError) as info:
        load_theory("tests/data/broken/kinds_and_types.yaml")
    assert len(info.value.errors) == 5
    assert "fourrier" in str(info.value)


def test_warnings_do_not_make_a_theory_invalid():
    theory, diagnostics = check_theory("t.yaml", text=(
        "theory: t\ntarget: builtin:x\nsites:\n  used: a.b\n  spare: c.d\n"
        "components:\n  m: {kind: linear, from: used, predicts: used}\n  dangling: {kind: rule, when: 'i > 0'}\n"))
    assert theory is None  # linear predicting a site from itself is an error...
    assert "only a dictionary" in str(diagnostics[0])
    theory, diagnostics = check_theory("t.yaml", text=(
        "theory: t\ntarget: builtin:x\nsites:\n  used: a.b\n  spare: c.d\n"
        "components:\n  m: {kind: dictionary, from: used, width: 8, k: 2, predicts: used}\n"
        "  dangling: {kind: rule, when: 'i > 0'}\n"))
    assert theory is not None  # ...but an autoencoder is fine, and unused parts only warn
    assert [d.severity for d in diagnostics] == ["warning", "warning"]
    assert [d.line for d in diagnostics] == [5, 8]


def test_hostile_yaml_tags_are_refused_and_run_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = ("theory: t\ntarget: builtin:x\ndescription: !!python/object/apply:os.system ['touch pwned']\n")
    theory, diagnostics = check_theory("t.yaml", text=text)
    assert theory is None
    assert "python/object/apply" in str(diagnostics[0]) and diagnostics[0].line == 3
    assert list(tmp_path.iterdir()) == []


def test_alias_bomb_is_refused():
    lines = ["theory: t", "target: builtin:x", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{k}: &a{k} [*a{k-1}, *a{k-1}, *a{k-1}, *a{k-1}, *a{k-1}, *a{k-1}, *a{k-1}, *a{k-1}]"
              for k in range(1, 9)]
    theory, diagnostics = check_theory("bomb.yaml", text="\n".join(lines))
    assert theory is None and "aliases expand too far" in str(diagnostics[0])


def test_parse_theory_from_text_names_the_given_path():
    with pytest.raises(TheoryError) as info:
        parse_theory("theory: t\ntarget: nowhere\n", path="inline.yaml")
    assert str(info.value).startswith("inline.yaml:2:9: error: expected a target 'SCHEME:ADDRESS'")
