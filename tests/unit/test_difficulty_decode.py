"""The difficulty decoder over all players at once equals the per-player statement of it."""

from __future__ import annotations

import numpy as np
import pytest

from models.difficulty import (
    DifficultyRecommendation,
    DifficultyRequest,
    DifficultyResponse,
    DifficultyTuning,
)
from tests.payloads import difficulty_request


def _per_player(request: DifficultyRequest, outputs: dict[str, np.ndarray]) -> DifficultyResponse:
    """The decoder it replaced, verbatim: validated models, one clip per player."""
    return DifficultyResponse(
        recommendations=[
            DifficultyRecommendation(
                player_id=p.player_id,
                quit_probability=round(float(q), 6),
                difficulty_adjustment=round(float(a), 6),
                recommended_difficulty=round(float(np.clip(p.current_difficulty + a, -1, 1)), 6),
            )
            for p, q, a in zip(
                request.players,
                outputs["quit_probability"],
                outputs["difficulty_adjustment"],
                strict=True,
            )
        ]
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(5))
def test_the_decoder_equals_the_per_player_definition(seed: int, dtype: type) -> None:
    rng = np.random.default_rng(seed)
    body = difficulty_request(40)
    for player in body["players"]:  # the whole range, its ends included
        player["current_difficulty"] = float(rng.choice([-1.0, 1.0, 0.0, rng.uniform(-1, 1)]))
    request = DifficultyRequest.model_validate(body)
    outputs: dict[str, np.ndarray] = {
        "quit_probability": rng.uniform(0, 1, 40).astype(dtype),
        "difficulty_adjustment": rng.choice([-1.0, 1.0, 0.3333333, 0.0], 40).astype(dtype),
    }
    decoded = DifficultyTuning().decode(request, outputs)
    assert decoded.model_dump_json() == _per_player(request, outputs).model_dump_json()
