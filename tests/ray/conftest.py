"""One real local Ray for the whole tier; the application is deployed once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray

from models import FAMILIES, trainable_families
from models.training import TrainSettings
from serving.app.builder import SourceSpec
from serving.app.gateway import ServeGateway
from serving.dataplane.model_source import DirectoryModelSource
from serving.runtime.ports import free_port
from serving.runtime.substrate import ServeRuntime
from serving.settings import FamilyServing, GrpcSettings, PayloadLogSettings, ServingSettings
from tests.auth import TestKeys

FAST = TrainSettings(train_samples=4_000, eval_samples=500, epochs=2)


@pytest.fixture(scope="session")
def model_source(
    tmp_path_factory: pytest.TempPathFactory, nan_npc_model: bytes
) -> DirectoryModelSource:
    """Versions 1 and 2 of every family, and a NaN-emitting NPC version ``nan``."""
    source = DirectoryModelSource(tmp_path_factory.mktemp("models"))
    for name, family in trainable_families().items():
        for version, seed in (("1", 1), ("2", 2)):
            source.add(name, version, family.train(FAST.model_copy(update={"seed": seed})).export())
    source.add("npc-behavior", "nan", nan_npc_model)
    return source


@pytest.fixture(scope="session")
def gateway(
    ray_cluster: str,
    serve_port: int,
    serve_runtime: ServeRuntime,
    model_source: DirectoryModelSource,
    test_keys: TestKeys,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServeGateway]:
    # NPC decisions are served in the ingress (the default for a CPU family);
    # difficulty keeps its own deployment, so both placements run in this tier.
    families = {
        **ServingSettings().families,
        "difficulty-tuning": FamilyServing(placement="deployment"),
    }
    # Every answered request is recorded, in files written twice a second.
    payloads = PayloadLogSettings(dir=tmp_path_factory.mktemp("payloads"), sample=1.0, rotate_s=0.5)
    settings = ServingSettings(
        port=serve_port,
        max_rows_per_request=256,
        families=families,
        auth=test_keys.auth,
        payload_log=payloads,
        grpc=GrpcSettings(port=free_port()),
        runtime=serve_runtime,
    )
    source = SourceSpec(
        import_path="serving.dataplane.model_source:DirectoryModelSource",
        arguments={"root": str(model_source.root)},
    )
    serving = ServeGateway(settings, source, ray_cluster)
    serving.deploy(dict.fromkeys(FAMILIES, "1"))
    try:
        yield serving
    finally:
        if ray.is_initialized():  # the cluster tier, which runs last, stops Ray itself
            serving.stop()


@pytest.fixture
def served(gateway: ServeGateway) -> Iterator[ServeGateway]:
    """The gateway with every family on version 1, before and after the test."""
    if any(v != "1" for v in gateway.versions.values()):
        gateway.deploy(dict.fromkeys(FAMILIES, "1"))
    yield gateway
    if any(v != "1" for v in gateway.versions.values()):
        gateway.deploy(dict.fromkeys(FAMILIES, "1"))
