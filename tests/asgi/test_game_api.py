"""The game API in-process: shapes of answers, and every way a request can be wrong."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from models.npc import ACTIONS
from serving.dataplane.backend import LocalBackend
from tests.asgi.conftest import MAX_ROWS, backend
from tests.payloads import difficulty_request, npc, npc_tick, npc_v2_request, rank_request


def _error(response, status: int, code: str) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    message: str = body["error"]["message"]
    return message


def test_npc_tick_answers_every_npc_and_names_the_version(client: TestClient) -> None:
    response = client.post("/v1/npc/act", json=npc_tick(12))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "npc-behavior", "version": "1"}
    assert [d["npc_id"] for d in body["decisions"]] == [f"npc-{i}" for i in range(12)]
    for decision in body["decisions"]:
        assert decision["action"] in ACTIONS
        assert sum(decision["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_difficulty_and_rank_answer_with_their_version(client: TestClient) -> None:
    difficulty = client.post("/v1/difficulty/recommend", json=difficulty_request(3)).json()
    assert difficulty["model"]["name"] == "difficulty-tuning"
    assert len(difficulty["recommendations"]) == 3
    ranked = client.post("/v1/personalization/rank", json=rank_request(40, k=7)).json()
    assert ranked["model"] == {"name": "personalization", "version": "1"}
    assert len(ranked["items"]) == 7
    scores = [item["score"] for item in ranked["items"]]
    assert scores == sorted(scores, reverse=True)


def test_models_lists_each_family_with_version_and_replicas(client: TestClient) -> None:
    models = client.get("/v1/models").json()["models"]
    assert {m["name"] for m in models} == {"npc-behavior", "difficulty-tuning", "personalization"}
    for m in models:
        assert (m["version"], m["ready"], m["replicas"], m["device"]) == ("1", True, 1, "cpu")


def test_openapi_document_describes_the_api(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert {"/v1/npc/act", "/v1/models", "/v2/models/{model_name}/infer"} <= set(document["paths"])
    # The game routes parse their bodies themselves; the document still describes them.
    body = document["paths"]["/v1/npc/act"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/NpcActRequest"}
    schemas = document["components"]["schemas"]
    assert {"health", "enemies"} <= set(schemas["NpcObservation"]["properties"])
    assert "NpcActResult" in schemas
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"npcs": [npc("a", health=1.5)]}, "npcs[0].health"),
        ({"npcs": [npc("a"), npc("b", threat="high")]}, "npcs[1].threat"),
        ({"npcs": [{"npc_id": "a", "ammo": 1, "threat": 0}]}, "npcs[0].health"),
        (
            {"npcs": [npc("a", enemies=[{"distance_m": 1, "bearing_deg": 0}] * 4)]},
            "npcs[0].enemies",
        ),
        ({"npcs": []}, "npcs"),
        ({"npcs": "all of them"}, "npcs"),
        ({}, "npcs"),
    ],
)
def test_bad_npc_input_is_422_naming_the_field(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    message = _error(client.post("/v1/npc/act", json=body), 422, "invalid_input")
    assert message.startswith(field) or f"; {field}" in message, message


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_422_naming_the_field(client: TestClient, literal: str) -> None:
    raw = json.dumps(npc_tick(2)).replace('"health": 0.1', f'"health": {literal}')
    response = client.post("/v1/npc/act", content=raw, headers={"Content-Type": "application/json"})
    assert "npcs[1].health" in _error(response, 422, "invalid_input")
    features = rank_request(3)
    raw = json.dumps(features).replace(str(features["player_features"][2]), literal, 1)
    response = client.post(
        "/v1/personalization/rank", content=raw, headers={"Content-Type": "application/json"}
    )
    assert "player_features[2]" in _error(response, 422, "invalid_input")


def test_oversized_tick_is_422_naming_npcs(client: TestClient) -> None:
    message = _error(client.post("/v1/npc/act", json=npc_tick(MAX_ROWS + 1)), 422, "invalid_input")
    assert message.startswith("npcs:")
    assert str(MAX_ROWS) in message


def test_wrong_feature_length_and_malformed_json_are_422(client: TestClient) -> None:
    short = rank_request(2)
    short["candidates"][1]["features"] = [0.0] * 3
    assert "candidates[1].features" in _error(
        client.post("/v1/personalization/rank", json=short), 422, "invalid_input"
    )
    broken = client.post(
        "/v1/npc/act", content=b'{"npcs": [', headers={"Content-Type": "application/json"}
    )
    _error(broken, 422, "invalid_input")


def test_family_without_a_champion_falls_back_on_the_game_api_and_is_503_on_v2(
    client: TestClient, backends: dict[str, LocalBackend]
) -> None:
    backends["npc-behavior"].model = None
    answer = client.post("/v1/npc/act", json=npc_tick(1))
    assert answer.status_code == 200, answer.text
    assert (answer.json()["source"], answer.json()["fallback_reason"]) == ("fallback", "error")
    assert answer.json()["model"]["version"] is None
    v2 = client.post("/v2/models/npc-behavior/infer", json=npc_v2_request(1))
    assert v2.status_code == 503
    assert "npc-behavior" in v2.json()["error"]
    response = client.get("/v2/models/npc-behavior/ready")  # Triton's error body
    assert response.status_code == 503
    assert "npc-behavior" in response.json()["error"]
    # The server is ready for what it is meant to serve: a load balancer following it
    # keeps the other families in rotation while one has no champion yet.
    assert client.get("/v2/health/ready").json() == {"ready": True}
    for name in ("difficulty-tuning", "personalization"):
        backends[name].model = None
    none_left = client.get("/v2/health/ready")  # nothing to serve at all: not ready
    assert none_left.status_code == 503
    assert "is not ready" in none_left.json()["error"]


def test_unknown_routes_and_methods_use_the_error_shape(client: TestClient) -> None:
    _error(client.get("/v1/nothing-here"), 404, "not_found")
    _error(client.get("/v1/npc/act"), 405, "method_not_allowed")


def test_a_model_emitting_nan_never_reaches_a_game_server(
    client: TestClient, backends: dict[str, LocalBackend], nan_npc_model: bytes
) -> None:
    """The game API answers with the fallback, marked; v2 (on_miss: error) with a 500."""
    backends["npc-behavior"].model = backend("npc-behavior", nan_npc_model).model
    answer = client.post("/v1/npc/act", json=npc_tick(3))
    assert answer.status_code == 200, answer.text
    assert answer.json()["fallback_reason"] == "invalid_output"
    probabilities = [d["probabilities"] for d in answer.json()["decisions"]]
    assert all(abs(sum(p.values()) - 1) < 1e-3 for p in probabilities)
    v2 = client.post("/v2/models/npc-behavior/infer", json=npc_v2_request(3))
    assert v2.status_code == 500
    assert "not finite" in v2.json()["error"]
    counts = client.get("/v1/models").json()["models"]
    npc = next(m for m in counts if m["name"] == "npc-behavior")["game_time"]
    assert npc["fallbacks"]["invalid_output"] == 1
    assert npc["errors_on_miss"]["invalid_output"] == 1
