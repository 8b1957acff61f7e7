"""The tutorial notebook (examples/tutorial.ipynb) runs top to bottom in a fresh kernel (nbclient),
as a reader would run it from the repository root; it is kept without outputs."""

import json

import pytest

from conftest import ROOT

NOTEBOOK = ROOT / "examples" / "tutorial.ipynb"


def test_the_notebook_is_kept_without_outputs():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)


def test_the_tutorial_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the test extra is not installed")
    nbclient = pytest.importorskip("nbclient", reason="the test extra is not installed")
    pytest.importorskip("transformers", reason="the minilm extra is not installed")
    monkeypatch.setenv("THEORYCRAFT_CACHE", str(tmp_path / "store"))  # the kernel inherits it
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = {c["id"]: c["outputs"] for c in notebook.cells if c["cell_type"] == "code"}
    text = json.dumps(outputs)
    assert "<b>Theory</b> <code>tiny-lm-tables</code>" in text  # a theory renders as tables
    assert "block0_matters" in text and "report.html" in text
