"""Where a family's model runs, and the in-process backend that runs it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

import numpy as np
import pytest
from pydantic import ValidationError

from models import trainable_family
from models.errors import ModelArtifactError, ModelNotReadyError, OverloadedError
from models.training import TrainSettings
from serving.app.autoscaling import aggressive
from serving.dataplane.backend import Replicas
from serving.dataplane.colocated import ColocatedBackend
from serving.dataplane.model_slot import ModelSlot
from serving.dataplane.model_source import DirectoryModelSource
from serving.settings import FamilyServing

NPC = trainable_family("npc-behavior")


def test_cpu_families_run_in_the_ingress_unless_they_need_their_own_deployment() -> None:
    assert FamilyServing().colocated
    assert not FamilyServing(num_gpus=0.25).colocated
    assert not FamilyServing(autoscaling=aggressive(min_replicas=1, max_replicas=2)).colocated
    assert not FamilyServing(placement="deployment").colocated
    with pytest.raises(ValidationError, match=r"placement.*num_gpus"):
        FamilyServing(placement="ingress", num_gpus=0.5)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> DirectoryModelSource:
    source = DirectoryModelSource(tmp_path_factory.mktemp("models"))
    model = NPC.train(TrainSettings(train_samples=2_000, eval_samples=200, epochs=1)).export()
    source.add(NPC.name, "1", model)
    source.add(NPC.name, "2", model)
    return source


async def _one_replica() -> Replicas:
    return Replicas(1, None)


def _predict_on(backend: ColocatedBackend) -> tuple[str, str]:
    """(version, name of the thread the model ran on)."""
    seen: list[str] = []
    model, _ = backend.slot.current()
    run = model.run_validated

    def spy(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(threading.current_thread().name)
        return run(feeds)

    model.run_validated = spy  # type: ignore[method-assign]
    try:
        prediction = asyncio.run(backend.predict(NPC.example_inputs(rows=3)))
    finally:
        model.run_validated = run  # type: ignore[method-assign]
    assert prediction.outputs["action_probs"].shape == (3, 10)
    return prediction.version, seen[0]


def test_champion_runs_on_the_loop_and_moves_off_it_during_a_rollout(
    source: DirectoryModelSource,
) -> None:
    backend = ColocatedBackend(ModelSlot(NPC, source), replicas=_one_replica)
    with pytest.raises(ModelNotReadyError):
        asyncio.run(backend.predict(NPC.example_inputs(rows=1)))
    asyncio.run(backend.slot.load("1"))
    assert _predict_on(backend) == ("1", threading.current_thread().name)
    backend.inline = False
    version, thread = _predict_on(backend)
    assert version == "1"
    assert thread.startswith("npc-behavior-onnx")
    assert backend.stats()["requests"] == 2


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(
    source: DirectoryModelSource,
) -> None:
    slot = ModelSlot(NPC, source)
    with pytest.raises(ModelArtifactError):
        asyncio.run(slot.load("9"))  # nothing loaded yet: the error is the caller's
    asyncio.run(slot.load("1"))
    asyncio.run(slot.load("9"))
    assert slot.version == "1"
    asyncio.run(slot.load("2"))
    assert slot.version == "2"
    asyncio.run(slot.load(None))
    assert slot.version is None


def test_a_busy_challenger_refuses_at_once_instead_of_queueing(
    source: DirectoryModelSource,
) -> None:
    backend = ColocatedBackend(
        ModelSlot(NPC, source),
        replicas=_one_replica,
        threads=1,
        inline=False,
        max_in_flight=1,
    )
    asyncio.run(backend.slot.load("1"))
    model, _ = backend.slot.current()
    release = threading.Event()
    run = model.run_validated

    def stuck(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        release.wait(10)
        return run(feeds)

    model.run_validated = stuck  # type: ignore[method-assign]

    async def two_calls() -> list[object]:
        first = asyncio.ensure_future(backend.predict(NPC.example_inputs(rows=1)))
        await asyncio.sleep(0.05)
        try:
            return [await backend.predict(NPC.example_inputs(rows=1))]
        except OverloadedError as exc:
            release.set()
            return [exc, await first]

    refused, answered = asyncio.run(two_calls())
    assert isinstance(refused, OverloadedError)
    assert "in flight" in refused.message
    assert answered.version == "1"  # type: ignore[attr-defined]
