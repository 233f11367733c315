"""A player's answer of moments ago stands in when the model cannot be afforded.

The real app over the real exported models; the game-time terms keep 50 ms of
every deadline for the fallback (``fallback_timing``), so a request sent with
``X-Deadline-Ms: 50`` leaves the model no time at all and one sent with 10 s
gets the model: the same path a late model or a loaded replica takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serving.dataplane.backend import LocalBackend
from serving.dataplane.plane import DataPlane
from tests.asgi.conftest import MAX_ROWS, calm_admission, fallback_timing, open_client
from tests.payloads import difficulty_request, rank_request

PATIENT = {"X-Deadline-Ms": "10000"}
UNAFFORDABLE = {"X-Deadline-Ms": "50"}


def _difficulty(players: list[str]) -> dict[str, Any]:
    body = difficulty_request(len(players))
    for entry, player in zip(body["players"], players, strict=True):
        entry["player_id"] = player
    return body


def test_a_recent_answer_for_the_same_players_and_question_stands_in_for_the_model(
    backends: dict[str, LocalBackend], key_file: Path, api_keys: dict[str, str]
) -> None:
    plane = DataPlane(backends, MAX_ROWS, timing=fallback_timing, admission=calm_admission())
    with open_client(plane, key_file, api_keys["ops"]) as client:

        def post(path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
            return client.post(path, json=body, headers=headers)

        model = post("/v1/difficulty/recommend", _difficulty(["a", "b"]), PATIENT).json()
        assert model["source"] == "model"
        cached = post("/v1/difficulty/recommend", _difficulty(["a", "b"]), UNAFFORDABLE)
        assert cached.status_code == 200, cached.text
        assert (cached.json()["source"], cached.json()["fallback_reason"]) == ("fallback", "cached")
        assert cached.json()["model"] == model["model"]  # the version whose answer it is
        assert cached.json()["recommendations"] == model["recommendations"]
        # One player never answered by the model: the family's own fallback, for all rows.
        rule = post("/v1/difficulty/recommend", _difficulty(["a", "c"]), UNAFFORDABLE).json()
        assert rule["fallback_reason"] == "deadline"

        ranked = post("/v1/personalization/rank", rank_request(20, seed=0), PATIENT).json()
        assert ranked["source"] == "model"
        again = post("/v1/personalization/rank", rank_request(20, seed=0), UNAFFORDABLE)
        assert again.status_code == 200, again.text
        assert again.json()["fallback_reason"] == "cached"
        assert again.json()["items"] == ranked["items"]
        # Other offers: no answer of the player's fits them; the family's own rule answers.
        offers = rank_request(20, seed=0)
        for candidate in offers["candidates"]:
            candidate["item_id"] = "new-" + candidate["item_id"]
        other = post("/v1/personalization/rank", offers, UNAFFORDABLE)
        assert other.json()["fallback_reason"] == "deadline", other.text

        listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["difficulty-tuning"]["game_time"]["fallbacks"]["cached"] == 1
    assert listed["difficulty-tuning"]["game_time"]["fallbacks"]["deadline"] == 1
    assert listed["personalization"]["game_time"]["fallbacks"]["cached"] == 1


def test_a_family_without_a_cache_never_answers_from_one(
    backends: dict[str, LocalBackend], key_file: Path, api_keys: dict[str, str]
) -> None:
    """NPC ticks declare no row keys: a tick is never the last tick's answer."""
    from tests.payloads import npc_tick

    plane = DataPlane(backends, MAX_ROWS, timing=fallback_timing, admission=calm_admission())
    with open_client(plane, key_file, api_keys["ops"]) as client:
        client.post("/v1/npc/act", json=npc_tick(2), headers=PATIENT)
        missed = client.post("/v1/npc/act", json=npc_tick(2), headers=UNAFFORDABLE).json()
    assert missed["fallback_reason"] == "deadline"
    assert len(plane.answering.answers) == 0
