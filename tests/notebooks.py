"""Running the notebooks as a data scientist would: top to bottom, in a fresh kernel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str, env: dict[str, str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Execute ``notebooks/<name>`` with ``env`` set (the kernel inherits it); its last value."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook.cells[-1].outputs[-1]["data"]["text/plain"]
