from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from models import FAMILIES
from models.runtime import OnnxModel
from models.training import TrainSettings
from serving.app import create_app
from serving.data_plane import DataPlane, LocalBackend

FAST = TrainSettings(train_samples=4_000, eval_samples=500, epochs=2)
MAX_ROWS = 64


@pytest.fixture(scope="session")
def onnx_models() -> dict[str, bytes]:
    """A real exported ONNX model per family (quality is not the point here)."""
    return {name: family.train(FAST).export() for name, family in FAMILIES.items()}


def backend(name: str, model: bytes | None, version: str | None = "1") -> LocalBackend:
    session = None if model is None else OnnxModel(model, FAMILIES[name].contract, prefer_gpu=False)
    return LocalBackend(name, session, version)


@pytest.fixture
def backends(onnx_models: dict[str, bytes]) -> dict[str, LocalBackend]:
    return {name: backend(name, model) for name, model in onnx_models.items()}


@pytest.fixture
def client(backends: dict[str, LocalBackend]) -> Iterator[TestClient]:
    app = create_app(DataPlane(backends, max_rows_per_request=MAX_ROWS))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
