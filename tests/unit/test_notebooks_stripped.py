"""Notebooks live in git without outputs: diffs stay readable, no data leaks into history."""

from __future__ import annotations

import nbformat
import pytest

from tests.notebooks import NOTEBOOKS


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_the_notebook_has_no_outputs(path: object) -> None:
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path}: outputs left in a cell"
            assert cell.execution_count is None
