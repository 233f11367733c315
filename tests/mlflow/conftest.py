from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from models.training import TrainSettings
from pipelines.registry import ModelRegistry, connect
from pipelines.settings import TrackingSettings
from pipelines.tracking_server import EmbeddedTrackingServer

# Registry tests need versions, not good models: small and quick.
FAST = TrainSettings(train_samples=4_000, eval_samples=1_000, epochs=2)
CLIENT = TrackingSettings(request_max_retries=0, request_timeout_s=5)


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTrackingServer]:
    """One real mlflow server for the tier, on a free loopback port."""
    with EmbeddedTrackingServer(tmp_path_factory.mktemp("mlflow"), port=0) as server:
        yield server


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedTrackingServer]:
    """A server of the test's own, for tests that stop it or need it empty."""
    with EmbeddedTrackingServer(tmp_path / "mlflow", port=0) as server:
        yield server


@pytest.fixture
def registry(tracking_server: EmbeddedTrackingServer, tmp_path: Path) -> ModelRegistry:
    return connect(tracking_server.url, CLIENT, tmp_path / "cache")
