"""Request bodies as a game server would send them, shared by the test tiers."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.difficulty import WINDOW
from models.personalization import ITEM_FEATURES, PLAYER_FEATURES


def npc(npc_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "npc_id": npc_id,
        "health": 0.8,
        "ammo": 0.6,
        "threat": 0.3,
        "enemies": [{"distance_m": 12.0, "bearing_deg": 30.0, "visible": True}],
    }
    body.update(overrides)
    return body


def npc_tick(count: int, prefix: str = "npc") -> dict[str, Any]:
    return {"npcs": [npc(f"{prefix}-{i}", health=(i % 10) / 10) for i in range(count)]}


def encounter(won: bool = True) -> dict[str, Any]:
    return {
        "won": won,
        "duration_s": 180.0,
        "damage_taken": 0.3,
        "accuracy": 0.5,
        "deaths": 0 if won else 2,
        "retries": 0 if won else 1,
        "difficulty": 0.1,
    }


def difficulty_request(players: int) -> dict[str, Any]:
    return {
        "players": [
            {
                "player_id": f"player-{i}",
                "session_minutes": 25.0,
                "current_difficulty": 0.1,
                "encounters": [encounter(won=(i + j) % 3 != 0) for j in range(WINDOW)],
            }
            for i in range(players)
        ]
    }


def rank_request(candidates: int, k: int = 5, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "player_id": "player-1",
        "player_features": rng.uniform(-1, 1, len(PLAYER_FEATURES)).round(4).tolist(),
        "candidates": [
            {
                "item_id": f"item-{i}",
                "features": rng.uniform(-1, 1, len(ITEM_FEATURES)).round(4).tolist(),
            }
            for i in range(candidates)
        ],
        "k": k,
    }


def v2_binary_body(
    inputs: dict[str, np.ndarray], binary_outputs: bool = True
) -> tuple[bytes, dict[str, str]]:
    """An infer body in the binary tensor extension, built by hand from the spec."""
    import json

    datatypes = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}
    header = {
        "inputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatypes[array.dtype],
                "parameters": {"binary_data_size": array.nbytes},
            }
            for name, array in inputs.items()
        ],
        "parameters": {"binary_data_output": binary_outputs},
    }
    encoded = json.dumps(header).encode()
    body = encoded + b"".join(np.ascontiguousarray(a).tobytes() for a in inputs.values())
    return body, {"Inference-Header-Content-Length": str(len(encoded))}


def npc_v2_request(rows: int, **parameters: Any) -> dict[str, Any]:
    """A JSON v2 infer body for ``rows`` NPC observations (valid features, seeded)."""
    from models import get_family

    observation = get_family("npc-behavior").example_inputs(rows=rows)["observation"][:rows]
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": "observation",
                "shape": list(observation.shape),
                "datatype": "FP32",
                "data": observation.reshape(-1).tolist(),
            }
        ]
    }
    if parameters:
        body["parameters"] = parameters
    return body
