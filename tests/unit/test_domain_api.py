"""The JSON shape of each family: request → tensors → response."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from models import FAMILIES, trainable_family
from models.build import ModelBuild
from models.difficulty import WINDOW, DifficultyRequest
from models.npc import ACTIONS, FEATURES, NpcActRequest
from models.personalization import ITEM_FEATURES, PLAYER_FEATURES, Candidate, RankRequest
from models.runtime import OnnxModel

ENCOUNTER = {
    "won": False,
    "duration_s": 240,
    "damage_taken": 0.9,
    "accuracy": 0.2,
    "deaths": 3,
    "retries": 2,
    "difficulty": 0.8,
}


def _npc(npc_id: str, **overrides: object) -> dict[str, object]:
    return {"npc_id": npc_id, "health": 1.0, "ammo": 1.0, "threat": 0.0, **overrides}


def _run(builds: dict[str, ModelBuild], name: str, request: object) -> object:
    family = FAMILIES[name]
    runtime = OnnxModel(builds[name].onnx_model, family.contract, prefer_gpu=False)
    return family.decode(request, runtime.predict(family.encode(request)))


def test_npc_tick_returns_one_decision_per_npc_in_order(builds: dict[str, ModelBuild]) -> None:
    request = NpcActRequest.model_validate(
        {
            "npcs": [
                _npc(
                    "grunt-1",
                    health=0.05,
                    threat=0.95,
                    under_fire=True,
                    enemies=[{"distance_m": 6, "bearing_deg": 10, "visible": True}],
                    cover=[{"distance_m": 3, "bearing_deg": -90}],
                ),
                _npc("grunt-2", ammo=0.0, reserve_ammo=0.8),
                _npc("guard-3", seconds_since_player_seen=300),
            ]
        }
    )
    assert trainable_family("npc-behavior").encode(request)["observation"].shape == (
        3,
        len(FEATURES),
    )
    response = _run(builds, "npc-behavior", request)
    decisions = response.decisions  # type: ignore[attr-defined]
    assert [d["npc_id"] for d in decisions] == ["grunt-1", "grunt-2", "guard-3"]
    assert decisions[0]["action"] in {"flee", "take_cover"}
    assert decisions[1]["action"] == "reload"
    assert decisions[2]["action"] in {"idle", "patrol"}
    for d in decisions:
        assert set(d["probabilities"]) == set(ACTIONS)
        assert sum(d["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("npc", "field"),
    [
        (_npc("x", health=1.5), "health"),
        (_npc("x", ammo=float("nan")), "ammo"),
        (_npc("x", threat="high"), "threat"),
        (_npc("x", enemies=[{"distance_m": 1, "bearing_deg": 0}] * 4), "enemies"),
        ({"npc_id": "x", "ammo": 1.0, "threat": 0.0}, "health"),
    ],
)
def test_npc_validation_names_the_field(npc: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        NpcActRequest.model_validate({"npcs": [npc]})
    assert field in {str(part) for error in caught.value.errors() for part in error["loc"]}


def test_difficulty_recommends_easier_for_a_struggling_player(
    builds: dict[str, ModelBuild],
) -> None:
    winning = {**ENCOUNTER, "won": True, "damage_taken": 0.1, "deaths": 0, "retries": 0,
               "accuracy": 0.8, "difficulty": -0.8}  # fmt: skip
    request = DifficultyRequest.model_validate(
        {
            "players": [
                {"player_id": "tilted", "session_minutes": 40, "current_difficulty": 0.8,
                 "encounters": [ENCOUNTER] * (WINDOW + 2)},
                {"player_id": "bored", "session_minutes": 40, "current_difficulty": -0.8,
                 "encounters": [winning] * WINDOW},
            ]
        }
    )  # fmt: skip
    tensors = FAMILIES["difficulty-tuning"].encode(request)
    assert tensors["encounters"].shape == (2, WINDOW, 7)
    recs = _run(builds, "difficulty-tuning", request).recommendations  # type: ignore[attr-defined]
    assert recs[0].difficulty_adjustment < -0.2
    assert recs[0].quit_probability > recs[1].quit_probability
    assert recs[1].difficulty_adjustment > 0.2
    for rec in recs:
        assert -1 <= rec.recommended_difficulty <= 1


def test_difficulty_needs_a_full_window() -> None:
    with pytest.raises(ValidationError) as caught:
        DifficultyRequest.model_validate(
            {"players": [{"player_id": "p", "session_minutes": 1, "current_difficulty": 0,
                          "encounters": [ENCOUNTER] * (WINDOW - 1)}]}
        )  # fmt: skip
    assert "encounters" in str(caught.value)


def test_rank_returns_top_k_of_the_supplied_candidates(builds: dict[str, ModelBuild]) -> None:
    rng = np.random.default_rng(1)
    request = RankRequest(
        player_id="p1",
        player_features=rng.uniform(-1, 1, len(PLAYER_FEATURES)).tolist(),
        candidates=[
            Candidate(
                item_id=f"offer-{i}", features=rng.uniform(-1, 1, len(ITEM_FEATURES)).tolist()
            )
            for i in range(25)
        ],
        k=5,
    )
    response = _run(builds, "personalization", request)
    items = response.items  # type: ignore[attr-defined]
    assert len(items) == 5
    assert len({i.item_id for i in items}) == 5
    scores = [i.score for i in items]
    assert scores == sorted(scores, reverse=True)


def test_rank_rejects_wrong_feature_length() -> None:
    with pytest.raises(ValidationError) as caught:
        RankRequest(player_id="p", player_features=[0.0] * 3, candidates=[])
    fields = {str(e["loc"][0]) for e in caught.value.errors()}
    assert {"player_features", "candidates"} <= fields
