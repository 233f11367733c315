"""Rollout routing in the data plane, in-process: stickiness, fallback, shadow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models import FAMILIES, trainable_family
from serving.dataplane.plane import DataPlane
from serving.dataplane.routing import Route
from tests.asgi.conftest import FAST, backend, calm_admission, open_client
from tests.payloads import npc_tick

NPC = "npc-behavior"


@pytest.fixture(scope="module")
def second_version() -> bytes:
    return trainable_family(NPC).train(FAST.model_copy(update={"seed": 99})).export()


def _plane(onnx_models: dict[str, bytes], challenger: bytes, route: Route) -> DataPlane:
    plane = DataPlane(
        {name: backend(name, model) for name, model in onnx_models.items()},
        max_rows_per_request=64,
        challengers={NPC: backend(NPC, challenger, version=route.challenger_version)},
        admission=calm_admission(),
    )
    plane.canary.set_routes({NPC: route})
    return plane


@pytest.fixture
def canary(
    onnx_models: dict[str, bytes], second_version: bytes, key_file: Path, api_keys: dict[str, str]
) -> Iterator[tuple[TestClient, DataPlane]]:
    plane = _plane(onnx_models, second_version, Route(challenger_version="2", weight=0.5, salt="t"))
    with open_client(plane, key_file, api_keys["infer"]) as client:
        yield client, plane


def test_each_session_stays_on_one_version(canary: tuple[TestClient, DataPlane]) -> None:
    client, plane = canary
    seen: dict[str, set[str]] = {}
    for round_ in range(5):
        for session in range(40):
            response = client.post(
                "/v1/npc/act", json=npc_tick(2), headers={"X-Session-Id": f"match-{session}"}
            )
            assert response.status_code == 200, (round_, response.text)
            seen.setdefault(f"match-{session}", set()).add(response.json()["model"]["version"])
    assert all(len(versions) == 1 for versions in seen.values())
    assert {v for versions in seen.values() for v in versions} == {"1", "2"}
    window = plane.canary.metrics.family(NPC).summary()
    assert window.challenger.requests > 0
    assert window.challenger.compared == window.challenger.requests


def test_an_invalid_challenger_answer_is_replaced_by_the_champions(
    onnx_models: dict[str, bytes], nan_npc_model: bytes, key_file: Path, api_keys: dict[str, str]
) -> None:
    plane = _plane(onnx_models, nan_npc_model, Route(challenger_version="bad", weight=1.0))
    with open_client(plane, key_file, api_keys["infer"]) as client:
        for i in range(20):
            response = client.post("/v1/npc/act", json=npc_tick(3), headers={"X-Player-Id": str(i)})
            assert response.status_code == 200
            assert response.json()["model"]["version"] == "1"
    challenger = plane.canary.metrics.family(NPC).summary().challenger
    assert (challenger.requests, challenger.invalid_rate) == (20, 1.0)


def test_shadow_compares_without_changing_answers(
    onnx_models: dict[str, bytes], second_version: bytes, key_file: Path, api_keys: dict[str, str]
) -> None:
    plane = _plane(onnx_models, second_version, Route(challenger_version="2", shadow=1.0))
    with open_client(plane, key_file, api_keys["infer"]) as client:
        versions = {
            client.post("/v1/npc/act", json=npc_tick(2)).json()["model"]["version"]
            for _ in range(15)
        }
        deadline = time.monotonic() + 5
        while (
            plane.canary.metrics.family(NPC).challenger.requests < 15
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
    assert versions == {"1"}
    challenger = plane.canary.metrics.family(NPC).summary().challenger
    assert challenger.requests == 15
    assert challenger.divergence is not None
    assert 0 <= challenger.divergence < 1


def test_a_request_naming_a_version_gets_that_version_whatever_its_cohort(
    canary: tuple[TestClient, DataPlane],
) -> None:
    client, _ = canary
    observation = FAMILIES[NPC].example_inputs(rows=2)["observation"].tolist()
    body = {"inputs": [{"name": "observation", "shape": [2, 40], "datatype": "FP32",
                        "data": observation}]}  # fmt: skip
    for session in range(30):  # half of these cohorts are routed to the challenger
        headers = {"X-Session-Id": f"match-{session}"}
        for version in ("1", "2"):
            answer = client.post(
                f"/v2/models/{NPC}/versions/{version}/infer", json=body, headers=headers
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == version
    stale = client.post(f"/v2/models/{NPC}/versions/0/infer", json=body)
    assert stale.status_code == 404
    assert "serving: 1" in stale.json()["error"]
