"""Mutation testing of validation (issue 15): every bundled example theory file, broken one way at a
time (a required key dropped, a value of the wrong type, a huge or negative number, a name that does
not exist, an include that leaves the tree or reads a device), must be refused by ``theorycraft
validate`` with exit code 1 and a ``file:line:col: error:`` line, no traceback, in well under 5 s.
Memory is not asserted per mutant (RSS only grows, so a delta per case says little); the limits in
spec/_yaml.py bound it, and test_hostile.py measures the worst files."""

import random
import re
import shutil
import time

import pytest
import yaml

from conftest import ROOT
from theorycraft.cli import main

EXAMPLES = ROOT / "examples"
TOP = sorted(EXAMPLES.glob("*.yaml"))
PARTS = sorted((EXAMPLES / "parts").glob("*.yaml"))
ERROR_LINE = re.compile(r"^\S+:\d+:\d+: error: .+$", re.M)
PER_KIND = 2  # mutants of each kind kept per file (chosen with a fixed seed): the test stays well under a minute


def _scalars(data, path=()):
    """(key path, value) of every scalar under components, variables and axioms."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _scalars(value, path + (key,))
    elif isinstance(data, list):
        for k, value in enumerate(data):
            yield from _scalars(value, path + (k,))
    elif path and path[0] in ("components", "variables", "axioms", "sites"):
        yield path, data


def _set(data, path, value):
    for key in path[:-1]:
        data = data[key]
    if value is _DROP:
        del data[path[-1]]
    else:
        data[path[-1]] = value


_DROP = object()
READS = ("from", "of", "predicts", "subspace", "theory", "input")


def mutants(data: dict, top: bool):
    """(kind, key path, new value) for one file's data."""
    out = []
    if top:
        out += [("drop required", ("theory",), _DROP)]  # target: may be left out (the model given as target=)
    for name, comp in (data.get("components") or {}).items():
        out.append(("drop required", ("components", name, "kind"), _DROP))
        out.append(("wrong type", ("components", name, "kind"), {"not": "a kind"}))
    for path, value in _scalars(data):
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            out += [("huge number", path, 10 ** 30), ("negative number", path, -7)]
        if isinstance(value, str) and path[-1] in READS or (len(path) > 1 and path[-2] in READS):
            out.append(("bad reference", path, "no_such_name"))
        if path[0] == "variables":
            out.append(("wrong type", path, ["a", "list"]))
    for bad in ("/etc/passwd", "../../../../../../etc/passwd", "/dev/zero", "parts/../../../outside.yaml"):
        out.append(("bad include", ("include",), [bad]))
    return out


def _cases():
    rng = random.Random(15)
    cases = []
    includer = {}
    for path in TOP:
        for entry in yaml.safe_load(path.read_text()).get("include") or ():
            includer.setdefault((path.parent / entry).resolve(), path)
    for path in TOP + PARTS:
        top = path.parent == EXAMPLES
        if not top and path.resolve() not in includer:
            continue
        by_kind = {}
        for case in mutants(yaml.safe_load(path.read_text()), top):
            by_kind.setdefault(case[0], []).append(case)
        for kind, found in sorted(by_kind.items()):
            for case in rng.sample(found, min(PER_KIND, len(found))):
                cases.append((path, includer.get(path.resolve(), path), case))
    return cases


CASES = _cases()
ALLOWED = {("negative number", "position")}  # a position from the end: the target's length judges it, at capture


@pytest.mark.parametrize("path, run, case", CASES,
                         ids=[f"{p.relative_to(EXAMPLES)}-{c[0]}-{'.'.join(map(str, c[1]))}" for p, _, c in CASES])
def test_a_mutant_is_refused_at_a_position_without_traceback(path, run, case, tmp_path, capsys):
    kind, key, value = case
    tree = tmp_path / "examples"
    shutil.copytree(EXAMPLES, tree, ignore=shutil.ignore_patterns("rasp", "vocabularies", "*.py"))
    target = tree / path.relative_to(EXAMPLES)
    data = yaml.safe_load(target.read_text())
    _set(data, key, value)
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    start = time.perf_counter()
    code = main(["validate", str(tree / run.relative_to(EXAMPLES))])
    seconds = time.perf_counter() - start
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert seconds < 5
    if code == 0:  # a mutant that is still a valid theory: only a number where any number is fine
        assert (kind, key[-1]) in ALLOWED or (kind, key[-2]) in ALLOWED, captured.out  # one of a list of positions
        return
    assert code == 1, captured.err
    assert ERROR_LINE.search(captured.err), captured.err
    assert "root:" not in captured.err  # nothing of /etc/passwd is ever quoted


def test_every_kind_of_mutant_is_generated():
    assert {c[0] for _, _, c in CASES} == {"drop required", "wrong type", "huge number", "negative number",
                                           "bad reference", "bad include"}
