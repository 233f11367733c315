"""Where replicas get ONNX files from: the seam between serving and the registry.

Serving knows only this protocol. The registry-backed source lives in
``pipelines`` and is handed to the deployments when the application is built,
so ``serving`` never imports MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from models.errors import ModelArtifactError


class ModelSource(Protocol):
    """Turns (family, version) into a verified local ONNX file. Must pickle."""

    def fetch(self, family: str, version: str) -> Path: ...


class DirectoryModelSource:
    """ONNX files laid out as ``root/<family>/<version>/model.onnx``.

    For air-gapped deployments and for tests that exercise serving alone.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def fetch(self, family: str, version: str) -> Path:
        path = self.root / family / version / "model.onnx"
        if not path.is_file():
            raise ModelArtifactError(f"{family} v{version}: no file at {path}")
        return path

    def add(self, family: str, version: str, model: bytes) -> Path:
        path = self.root / family / version / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(model)
        return path
