"""One MLflow server, registry and serving gateway for the rollout tests of the tier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from models import install_catalog, installed_catalog
from models.build import build
from models.catalog import load_families
from models.spec import FamilySpec
from pipelines.registry import (
    CHAMPION,
    ModelRegistry,
    connect,
)
from pipelines.registry_source import registry_source_spec
from pipelines.settings import TrackingSettings
from pipelines.signing import VersionSigner
from pipelines.supervisor import TrackingSupervisor
from pipelines.tracking_server import EmbeddedTrackingServer, MlflowCredentials
from pipelines.training import register_build
from serving.app.autoscaling import Capacity
from serving.app.gateway import ServeGateway
from serving.runtime.ports import free_port
from serving.runtime.substrate import ServeRuntime
from serving.settings import GrpcSettings, PayloadLogSettings, ServingSettings
from tests.auth import TestKeys
from tests.e2e.rollouts import GOOD, NPC


@pytest.fixture(scope="package")
def credentials_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mlflow-auth") / "mlflow-credentials.json"
    MlflowCredentials.at(path)
    return path


@pytest.fixture(scope="package")
def supervised(
    tmp_path_factory: pytest.TempPathFactory, credentials_file: Path
) -> Iterator[TrackingSupervisor]:
    """The MLflow server, restarted when it dies, as the stack runs it.

    The supervisor stops only with the server: a server it restarted gets
    SIGTERM when the supervisor's thread ends (PDEATHSIG follows the thread).
    """
    root = tmp_path_factory.mktemp("rollout-mlflow")
    credentials = MlflowCredentials.at(credentials_file)
    with EmbeddedTrackingServer(root, credentials=credentials) as server:
        supervisor = TrackingSupervisor(server, interval_s=0.25, backoff_s=(0.5,))
        supervisor.start()
        try:
            yield supervisor
        finally:
            supervisor.stop()


@pytest.fixture(scope="package")
def tracking(supervised: TrackingSupervisor) -> EmbeddedTrackingServer:
    return supervised.server


@pytest.fixture(scope="package")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("signing") / "signing.key"
    VersionSigner.at(path, create=True)
    return path


@pytest.fixture(scope="package")
def registry(
    tracking: EmbeddedTrackingServer,
    tmp_path_factory: pytest.TempPathFactory,
    signing_key: Path,
    credentials_file: Path,
) -> ModelRegistry:
    client_settings = TrackingSettings(request_max_retries=0, request_timeout_s=10)
    signer = VersionSigner.at(signing_key)
    cache = tmp_path_factory.mktemp("cache")
    credentials = MlflowCredentials.at(credentials_file)
    return connect(tracking.url, client_settings, cache, signer, credentials)


@pytest.fixture(scope="package")
def champion(registry: ModelRegistry) -> object:
    """Version 1 of the NPC model, promoted; its torch network seeds the bad challengers."""
    result = build(NPC, GOOD.model_copy(update={"seed": 1}))
    registered = register_build(result, registry)
    registry.promote(NPC.name, registered.version)
    return result.trained.module


@pytest.fixture(scope="package")
def replica_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model cache the ingress replicas share."""
    return tmp_path_factory.mktemp("replica-cache")


SPEC_FOLDER = Path(__file__).parent / "families"


@pytest.fixture(scope="package")
def spec_families() -> Iterator[list[FamilySpec]]:
    """The families ``families/`` declares in spec files, registered for this package only."""
    before = installed_catalog()
    specs = load_families(SPEC_FOLDER)
    yield specs
    install_catalog(before)


@pytest.fixture(scope="package")
def gateway(
    ray_cluster: str,
    spec_families: list[FamilySpec],
    serve_port: int,
    serve_runtime: ServeRuntime,
    registry: ModelRegistry,
    champion: object,
    tmp_path_factory: pytest.TempPathFactory,
    test_keys: TestKeys,
    signing_key: Path,
    credentials_file: Path,
    replica_cache: Path,
) -> Iterator[ServeGateway]:
    tracking = TrackingSettings(request_max_retries=1, request_timeout_s=10)
    source = registry_source_spec(
        registry.tracking_uri, tracking, replica_cache, signing_key, credentials_file
    )
    # Every answer recorded, in files written twice a second: what pre-flight replays.
    payloads = PayloadLogSettings(dir=tmp_path_factory.mktemp("payloads"), sample=1.0, rotate_s=0.5)
    # Ray is told 4 CPUs for room; the ingress ceiling is this machine's own cores (the
    # local stack's Ray sees those), so rollouts under load do not start replicas that
    # add no compute here.
    settings = ServingSettings(
        port=serve_port, auth=test_keys.auth, family_specs=spec_families, payload_log=payloads,
        capacity=Capacity.this_machine(), grpc=GrpcSettings(port=free_port()),
        runtime=serve_runtime,
    )  # fmt: skip
    serving = ServeGateway(settings, source, ray_cluster)
    serving.deploy({NPC.name: registry.aliases(NPC.name)[CHAMPION]})
    try:
        yield serving
    finally:
        serving.stop()
