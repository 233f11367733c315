"""Game time over HTTP, in process: deadlines, marked fallbacks, expired work, shedding by class.

The NPC model here is the real exported one behind a deliberate delay, served
by the same in-process backend the ingress uses (``ColocatedBackend``), so the
pool, its queue and the drop of expired work are the production code.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, cast

import httpx2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from models import get_family
from models.runtime import OnnxModel
from serving.dataplane.backend import LocalBackend, ModelStatus, Prediction, Replicas
from serving.dataplane.colocated import ColocatedBackend
from serving.dataplane.game_time import Deadline, GameTimeCounters
from serving.dataplane.model_slot import ModelSlot
from serving.dataplane.model_source import DirectoryModelSource
from serving.dataplane.plane import DataPlane
from serving.http.app import create_app
from serving.settings import ServingSettings
from tests.asgi.conftest import MAX_ROWS, calm_admission, settings_with_keys
from tests.payloads import npc_tick, npc_v2_request, rank_request

NPC = "npc-behavior"
SLOW_S = 0.2  # far beyond any deadline below: only a fallback can be on time


class SlowModel:
    """The real model, late on purpose, recording every call it actually runs."""

    def __init__(self, model: OnnxModel, delay_s: float) -> None:
        self.model = model
        self.delay_s = delay_s
        self.calls: list[int] = []
        self.lock = threading.Lock()

    @property
    def device(self) -> str:
        return self.model.device

    @property
    def providers(self) -> list[str]:
        return self.model.providers

    def run_validated(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock:
            self.calls.append(len(inputs["observation"]))
        time.sleep(self.delay_s)
        return self.model.run_validated(inputs)


class SlowSlot(ModelSlot):
    def __init__(self, source: DirectoryModelSource, delay_s: float) -> None:
        super().__init__(get_family(NPC), source)
        self.delay_s = delay_s
        self.slow: SlowModel | None = None

    def _open(self, version: str) -> OnnxModel:
        self.slow = SlowModel(super()._open(version), self.delay_s)
        return cast(OnnxModel, self.slow)


async def _one_replica() -> Replicas:
    return Replicas(1, None)


@pytest.fixture
def slow_npc(tmp_path: Path, onnx_models: dict[str, bytes]) -> tuple[ColocatedBackend, SlowSlot]:
    (tmp_path / NPC / "1").mkdir(parents=True)
    (tmp_path / NPC / "1" / "model.onnx").write_bytes(onnx_models[NPC])
    slot = SlowSlot(DirectoryModelSource(tmp_path), SLOW_S)
    asyncio.run(slot.load("1"))
    # One thread: a second request queues behind the first, as on a busy replica.
    backend = ColocatedBackend(slot, _one_replica, threads=1, counters=GameTimeCounters())
    asyncio.run(backend.predict(get_family(NPC).example_inputs(rows=2)))  # learns it is slow
    return backend, slot


def _plane(
    backends: dict[str, LocalBackend], npc: ColocatedBackend, settings: ServingSettings
) -> DataPlane:
    """The plane over the slow NPC backend, on ``settings``' game-time terms."""
    return DataPlane(
        {**backends, NPC: npc}, MAX_ROWS, timing=settings.timing, counters=npc.counters,
        admission=calm_admission(),
    )  # fmt: skip


def test_a_late_model_is_answered_by_the_marked_fallback_within_the_deadline_and_v2_gets_504(
    backends: dict[str, LocalBackend],
    slow_npc: tuple[ColocatedBackend, SlowSlot],
    key_file: Path,
    api_keys: dict[str, str],
) -> None:
    npc, slot = slow_npc
    settings = settings_with_keys(key_file)
    app = create_app(_plane(backends, npc, settings), settings)
    headers = {"Authorization": f"Bearer {api_keys['ops']}", "X-Deadline-Ms": "5"}
    with TestClient(app, raise_server_exceptions=False, headers=headers) as client:
        client.post("/v1/npc/act", json=npc_tick(1))  # warm the client's path
        started = time.perf_counter()
        response = client.post("/v1/npc/act", json=npc_tick(4))
        elapsed_ms = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["source"], body["fallback_reason"]) == ("fallback", "deadline")
        assert body["model"] == {"name": NPC, "version": None}
        assert len(body["decisions"]) == 4
        # 5 ms of deadline; the margin is the test client's own threads, far
        # below the model's 200 ms, which the answer therefore never waited for.
        assert elapsed_ms < 5 + 60, elapsed_ms

        v2 = client.post(f"/v2/models/{NPC}/infer", json=npc_v2_request(2))
        assert v2.status_code == 504
        assert "deadline" in v2.json()["error"]
        timeout = client.post(
            f"/v2/models/{NPC}/infer",
            json=npc_v2_request(2, timeout=3000),  # Triton's microseconds
            headers={"X-Deadline-Ms": "10000"},
        )
        assert timeout.status_code == 504
        for bad, field in (({"X-Deadline-Ms": "soon"}, "x-deadline-ms"),
                           ({"X-Priority": "urgent"}, "x-priority")):  # fmt: skip
            refused = client.post("/v1/npc/act", json=npc_tick(1), headers=bad)
            assert refused.status_code == 422
            assert field in refused.json()["error"]["message"]
        listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert listed[NPC]["deadline_ms"] == 20
        assert listed[NPC]["priority"] == "critical"
        assert listed[NPC]["game_time"]["fallbacks"]["deadline"] >= 2
        assert listed[NPC]["game_time"]["errors_on_miss"]["deadline"] == 2
    assert slot.slow is not None


def test_v2_answers_with_the_fallback_when_settings_ask_and_says_so_in_parameters(
    backends: dict[str, LocalBackend],
    slow_npc: tuple[ColocatedBackend, SlowSlot],
    key_file: Path,
    api_keys: dict[str, str],
) -> None:
    npc, _ = slow_npc
    changes = {"families": {NPC: {"on_miss": {"v2": "fallback"}}}}
    serving = settings_with_keys(key_file, **changes)
    headers = {"Authorization": f"Bearer {api_keys['ops']}", "X-Deadline-Ms": "5"}
    with TestClient(create_app(_plane(backends, npc, serving), serving), headers=headers) as client:
        response = client.post(f"/v2/models/{NPC}/infer", json=npc_v2_request(3))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["parameters"] == {"source": "fallback", "fallback_reason": "deadline"}
    assert "model_version" not in body
    probabilities = np.asarray(body["outputs"][0]["data"]).reshape(3, -1)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)


def test_work_that_expires_in_the_queue_never_runs_on_the_model(
    backends: dict[str, LocalBackend], slow_npc: tuple[ColocatedBackend, SlowSlot]
) -> None:
    """Five requests meet a one-thread pool: the first runs, the rest expire queued."""
    npc, slot = slow_npc
    assert slot.slow is not None
    slot.slow.calls.clear()
    plane = _plane(backends, npc, ServingSettings())
    inputs = get_family(NPC).example_inputs(rows=3)

    async def burst() -> list[Any]:
        calls = []
        for _ in range(5):
            call, ticket = plane.admit(NPC, "game", received=time.monotonic(), deadline_ms=20)
            calls.append((call, ticket))
        answers = await asyncio.gather(*(plane.infer(NPC, inputs, call=c) for c, _ in calls))
        for _, ticket in calls:
            ticket.__exit__(None, None, None)
        await asyncio.sleep(SLOW_S * 2)  # the one that ran finishes; nothing else starts
        return answers

    answers = asyncio.run(burst())
    assert [a.fallback_reason for a in answers] == ["deadline"] * 5
    assert slot.slow.calls == [3]  # only the first reached the model
    assert plane.counters.families[NPC].expired == 4
    assert npc.stats()["expired"] == 4


class LoopHog:
    """A model that runs on the event loop and takes 4 ms of it per call: CPU saturation."""

    def __init__(self, inner: LocalBackend) -> None:
        self.inner = inner
        self.version = inner.version

    async def predict(
        self, inputs: dict[str, np.ndarray], deadline: Deadline | None = None
    ) -> Prediction:
        time.sleep(0.004)  # noqa: ASYNC251 -- holding the loop is the point
        assert self.inner.model is not None
        return Prediction(self.inner.model.run_validated(inputs), self.inner.version or "")

    async def status(self) -> ModelStatus:
        return await self.inner.status()


def test_under_saturation_best_effort_is_shed_while_critical_npcs_are_answered(
    backends: dict[str, LocalBackend], key_file: Path, api_keys: dict[str, str]
) -> None:
    hog = {name: LoopHog(b) for name, b in backends.items()}
    serving = settings_with_keys(key_file)
    plane = DataPlane(hog, MAX_ROWS, timing=serving.timing)  # default admission bounds
    app = create_app(plane, serving)
    headers = {"Authorization": f"Bearer {api_keys['ops']}"}

    async def load() -> tuple[list[int], list[int], dict[str, Any]]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(
            transport=transport, base_url="http://gameserve", headers=headers
        ) as client:
            await client.post("/v1/npc/act", json=npc_tick(1))  # the replica's first request
            await asyncio.sleep(0.05)  # ... and its loop idle since
            calls = []
            for i in range(60):  # offered at once: far more than the loop runs in a tick
                calls.append(client.post("/v1/npc/act", json=npc_tick(2)))
                calls.append(client.post("/v1/personalization/rank", json=rank_request(20, seed=i)))
            answers = await asyncio.gather(*calls)
            npc, rank = answers[0::2], answers[1::2]
            listed = (await client.get("/v1/models")).json()["models"]
            plane.admission.lag.stop()
            return (
                [r.status_code for r in npc],
                [r.status_code for r in rank],
                {m["name"]: m["game_time"] for m in listed},
            )

    npc, rank, counts = asyncio.run(load())
    assert set(npc) == {200}  # every NPC answered: by the model, or its fallback
    assert rank.count(503) >= len(rank) // 3, rank  # personalization was shed
    assert set(rank) <= {200, 503}
    assert counts["personalization"]["shed"]["best_effort"] == rank.count(503)
    assert counts[NPC]["shed"] == {"critical": 0, "normal": 0, "best_effort": 0}
