"""The library's face: typed (py.typed), its lazy names visible to dir() and to type checkers, and a
numpy-style docstring, every parameter and the return said, on every public function."""

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import theorycraft
from theorycraft import api

PUBLIC_FUNCTIONS = sorted(n for n in theorycraft.__all__ if n[0].islower())


def test_package_is_typed():
    assert (Path(theorycraft.__file__).parent / "py.typed").exists()


def test_lazy_names_are_in_dir_without_loading_jax():
    code = ("import sys, theorycraft; names = dir(theorycraft); "
            "assert set(theorycraft.__all__) <= set(names), set(theorycraft.__all__) - set(names); "
            "assert 'jax' not in sys.modules and 'torch' not in sys.modules, 'dir() imported jax or torch'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_type_checkers_see_every_lazy_name_where_it_lives():
    tree = ast.parse(Path(theorycraft.__file__).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING")
    seen = {alias.name: node.module for node in block.body for alias in node.names}
    assert seen == theorycraft._LAZY


@pytest.mark.parametrize("function", [getattr(theorycraft, n) for n in PUBLIC_FUNCTIONS] + [api.score_run],
                         ids=PUBLIC_FUNCTIONS + ["score_run"])
def test_public_function_has_numpy_docstring(function):
    doc = inspect.getdoc(function)
    assert re.search(r"^Parameters\n-{10}$", doc, re.M) and re.search(r"^Returns\n-{7}$", doc, re.M)
    parameters = doc.split("Parameters\n----------\n", 1)[1].split("\nReturns\n", 1)[0]
    documented = set(re.findall(r"^(\w+) :", parameters, re.M))
    assert documented == set(inspect.signature(function).parameters)
    returns = doc.split("Returns\n-------\n", 1)[1]
    assert re.match(r"\S.*\n    \S", returns)  # a type, and a line saying what it is
