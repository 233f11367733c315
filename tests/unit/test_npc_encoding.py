"""The NPC tick's encoder, decoder and teacher, fast forms against their plain definitions."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from models.npc import ACTIONS, FEATURES, NpcActRequest, NpcActResponse, NpcBehavior
from models.npc.encoding import decode_probabilities, encode_observations, reference_features
from models.npc.teacher import ROW_BY_ROW_MAX, sample_observations, teacher_probabilities
from tests.payloads import npc_tick


def _contact(rng: np.random.Generator, ties: bool) -> dict[str, Any]:
    return {
        # ties: a handful of distances, so equal ones must keep the order sent
        "distance_m": float(rng.choice([0.0, 5.0, 50.0])) if ties else float(rng.uniform(0, 120)),
        "bearing_deg": float(rng.uniform(-360, 360)),
        "visible": bool(rng.random() < 0.5),
    }


def _random_tick(rng: np.random.Generator, npcs: int, ties: bool = False) -> NpcActRequest:
    body = []
    for i in range(npcs):
        body.append(
            {
                "npc_id": f"npc-{i}",
                "health": float(rng.random()),
                "armor": float(rng.random()),
                "ammo": float(rng.random()),
                "reserve_ammo": float(rng.random()),
                "grenades": int(rng.integers(0, 4)),
                "threat": float(rng.random()),
                "seconds_since_player_seen": float(rng.uniform(0, 200)),
                "alert": float(rng.random()),
                "under_fire": bool(rng.random() < 0.5),
                "in_cover": bool(rng.random() < 0.5),
                "heard_noise": bool(rng.random() < 0.5),
                "objective_distance_m": float(rng.uniform(0, 300)),
                "enemies": [_contact(rng, ties) for _ in range(rng.integers(0, 4))],
                "allies": [_contact(rng, ties) for _ in range(rng.integers(0, 3))],
                "cover": [_contact(rng, ties) for _ in range(rng.integers(0, 3))],
                "aggression": float(rng.random()),
                "morale": float(rng.random()),
            }
        )
    return NpcActRequest.model_validate({"npcs": body})


def _reference(request: NpcActRequest) -> np.ndarray:
    return np.asarray([reference_features(obs) for obs in request.npcs], dtype=np.float32)


@pytest.mark.parametrize("seed", range(20))
def test_the_vectorised_encoder_equals_the_reference_on_random_ticks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    request = _random_tick(rng, int(rng.integers(1, 300)), ties=seed % 2 == 1)
    encoded = encode_observations(request.npcs)
    assert encoded.dtype == np.float32
    assert encoded.shape == (len(request.npcs), len(FEATURES))
    np.testing.assert_array_equal(encoded, _reference(request))


@pytest.mark.parametrize(
    "npc",
    [
        {"npc_id": "bare", "health": 0.0, "ammo": 0.0, "threat": 0.0},  # every default, no contact
        {"npc_id": "full", "health": 1.0, "ammo": 1.0, "threat": 1.0, "armor": 1.0,
         "grenades": 3, "seconds_since_player_seen": 1e9, "objective_distance_m": 1e9,
         "under_fire": True, "in_cover": True, "heard_noise": True,
         "enemies": [{"distance_m": 10_000, "bearing_deg": 360, "visible": False},
                     {"distance_m": 0, "bearing_deg": -360},
                     {"distance_m": 0, "bearing_deg": 90, "visible": False}],
         "allies": [{"distance_m": 3, "bearing_deg": 0}, {"distance_m": 3, "bearing_deg": 180}],
         "cover": [{"distance_m": 49.999, "bearing_deg": -90}]},
    ],
)  # fmt: skip
def test_the_vectorised_encoder_equals_the_reference_on_edge_cases(npc: dict[str, Any]) -> None:
    for request in (
        NpcActRequest.model_validate({"npcs": [npc]}),
        NpcActRequest.model_validate({"npcs": [npc, npc_tick(1)["npcs"][0], npc]}),
    ):
        np.testing.assert_array_equal(encode_observations(request.npcs), _reference(request))


def test_the_family_encodes_with_the_vectorised_encoder() -> None:
    request = _random_tick(np.random.default_rng(7), 16)
    encoded = NpcBehavior().encode(request)["observation"]
    np.testing.assert_array_equal(encoded, _reference(request))


def test_decoded_decisions_are_the_validated_response_of_the_rounded_probabilities() -> None:
    request = _random_tick(np.random.default_rng(3), 40)
    probs = NpcBehavior().fallback_outputs({"observation": encode_observations(request.npcs)})
    decoded = decode_probabilities(request, probs["action_probs"])
    expected = {
        "decisions": [
            {
                "npc_id": obs.npc_id,
                "action": ACTIONS[int(np.argmax(row))],
                "probabilities": {a: round(float(p), 6) for a, p in zip(ACTIONS, row, strict=True)},
            }
            for obs, row in zip(request.npcs, probs["action_probs"].astype(np.float64), strict=True)
        ]
    }
    # What the route writes is what validation of the same decisions would write.
    assert json.loads(decoded.model_dump_json()) == expected
    assert decoded.model_dump_json() == NpcActResponse.model_validate(expected).model_dump_json()


@pytest.mark.parametrize("seed", range(3))
def test_the_teacher_row_by_row_equals_the_teacher_over_columns(seed: int) -> None:
    """Small ticks run the script on floats, larger ones on numpy columns: one script,
    and the two must answer alike (to rounding) on every situation, edge cases included."""
    x = np.concatenate(
        [sample_observations(400, np.random.default_rng(seed))]
        + [case["observation"] for case in NpcBehavior().edge_cases()]
    )
    over_columns = teacher_probabilities(x)
    assert len(x) > ROW_BY_ROW_MAX
    row_by_row = np.concatenate(
        [teacher_probabilities(x[i : i + ROW_BY_ROW_MAX]) for i in range(0, len(x), ROW_BY_ROW_MAX)]
    )
    np.testing.assert_allclose(row_by_row, over_columns, rtol=0, atol=1e-12)
    assert (row_by_row.argmax(axis=1) == over_columns.argmax(axis=1)).all()
