"""The notebooks in docs/ run top to bottom (on the tiny data, in a fresh kernel)."""

from __future__ import annotations

import shutil

import pytest

from .conftest import REPO

NOTEBOOKS = sorted((REPO / "docs").glob("*.ipynb"))


def test_docs_have_notebooks():
    assert NOTEBOOKS, "docs/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, tiny_data, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    copy = shutil.copy(path, tmp_path / path.name)  # runs/ and any other output land in tmp_path
    notebook = nbformat.read(copy, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell that failed
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # the curves, the samples and the drawn digit are shown inline
