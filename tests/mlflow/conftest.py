from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from models.training import TrainSettings
from pipelines.registry import ModelRegistry, connect
from pipelines.settings import TrackingSettings
from pipelines.signing import VersionSigner
from pipelines.tracking_server import EmbeddedTrackingServer, MlflowCredentials

# Registry tests need versions, not good models: small and quick.
FAST = TrainSettings(train_samples=4_000, eval_samples=1_000, epochs=2)
CLIENT = TrackingSettings(request_max_retries=0, request_timeout_s=5)


@pytest.fixture(scope="session")
def credentials_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MLflow user and password the stack would hold, for every server of the tier."""
    path = tmp_path_factory.mktemp("mlflow-auth") / "mlflow-credentials.json"
    MlflowCredentials.at(path)
    return path


@pytest.fixture(scope="session")
def credentials(credentials_file: Path) -> MlflowCredentials:
    return MlflowCredentials.at(credentials_file)


@pytest.fixture(scope="session")
def tracking_server(
    tmp_path_factory: pytest.TempPathFactory, credentials: MlflowCredentials
) -> Iterator[EmbeddedTrackingServer]:
    """One real mlflow server for the tier, on a free loopback port, with MLflow's auth."""
    root = tmp_path_factory.mktemp("mlflow")
    with EmbeddedTrackingServer(root, port=0, credentials=credentials) as server:
        yield server


@pytest.fixture
def own_server(tmp_path: Path, credentials: MlflowCredentials) -> Iterator[EmbeddedTrackingServer]:
    """A server of the test's own, for tests that stop it or need it empty."""
    with EmbeddedTrackingServer(tmp_path / "mlflow", port=0, credentials=credentials) as server:
        yield server


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The platform's signing key for this session's registries."""
    path = tmp_path_factory.mktemp("signing") / "signing.key"
    VersionSigner.at(path, create=True)
    return path


@pytest.fixture
def signer(signing_key: Path) -> VersionSigner:
    return VersionSigner.at(signing_key)


@pytest.fixture
def registry(
    tracking_server: EmbeddedTrackingServer,
    tmp_path: Path,
    signer: VersionSigner,
    credentials: MlflowCredentials,
) -> ModelRegistry:
    return connect(tracking_server.url, CLIENT, tmp_path / "cache", signer, credentials)
