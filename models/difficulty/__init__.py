"""Difficulty tuning: a player's recent telemetry → quit risk and an adjustment.

Players are simulated with a latent skill and a tilt (how fast losses turn
into frustration). The network sees only what a game server records, and
learns to predict a frustrated quit and the difficulty change that brings the
player's success rate into the target band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field

from models.contract import FamilyContract, RequestModel, TensorSpec
from models.family import GameRoute, TrainableFamily
from models.metrics import roc_auc
from models.runtime import Predictor
from models.training import Dataset

if TYPE_CHECKING:
    import torch

WINDOW = 10
ENCOUNTER_FEATURES = (
    "won",
    "duration",
    "damage_taken",
    "accuracy",
    "deaths",
    "retries",
    "difficulty",
)
SESSION_FEATURES = ("session_length", "current_difficulty")
TARGET_BAND = (0.6, 0.8)
# Challenge in skill units at difficulty 1.0; difficulty lives in [-1, 1].
DIFFICULTY_SCALE = 2.0
WIN_SLOPE = 1.6
QUIT_HORIZON = 5
# The synthetic population's share of players who quit within the horizon (0.313
# over 20,000 training players): the fallback's quit risk, knowing nothing else.
BASE_QUIT_RATE = 0.31
MAX_DURATION_S = 600.0
MAX_SESSION_MIN = 120.0


def encounter_features(
    won: np.ndarray,
    duration_s: np.ndarray,
    damage_taken: np.ndarray,
    accuracy: np.ndarray,
    deaths: np.ndarray,
    retries: np.ndarray,
    difficulty: np.ndarray,
) -> np.ndarray:
    """Encounter measurements -> features, in ``ENCOUNTER_FEATURES`` order (last axis).

    The simulator that makes training data and the API's ``encode`` both call
    this, so a model is always served the scaling it was trained on.
    """
    return np.stack(
        [
            np.asarray(won, dtype=np.float64),
            np.minimum(duration_s, MAX_DURATION_S) / MAX_DURATION_S,
            damage_taken,
            accuracy,
            np.minimum(deaths, 5) / 5.0,
            np.minimum(retries, 5) / 5.0,
            difficulty,
        ],
        axis=-1,
    )


def session_features(minutes: np.ndarray, difficulty: np.ndarray) -> np.ndarray:
    """Session measurements -> features, in ``SESSION_FEATURES`` order (last axis)."""
    return np.stack([np.minimum(minutes / MAX_SESSION_MIN, 1.0), difficulty], axis=-1)


class Encounter(RequestModel):
    """One finished encounter (fight, level, round) of the player."""

    won: bool
    duration_s: float = Field(ge=0, le=86_400, allow_inf_nan=False)
    damage_taken: float = Field(ge=0, le=1, allow_inf_nan=False, description="Share of max health")
    accuracy: float = Field(ge=0, le=1, allow_inf_nan=False)
    deaths: int = Field(ge=0, le=1000)
    retries: int = Field(ge=0, le=1000)
    difficulty: float = Field(ge=-1, le=1, allow_inf_nan=False)


class PlayerTelemetry(RequestModel):
    player_id: str = Field(min_length=1, max_length=128)
    session_minutes: float = Field(ge=0, allow_inf_nan=False)
    current_difficulty: float = Field(ge=-1, le=1, allow_inf_nan=False)
    encounters: list[Encounter] = Field(
        min_length=WINDOW, max_length=1000, description=f"Oldest first; the last {WINDOW} count"
    )


class DifficultyRequest(RequestModel):
    players: list[PlayerTelemetry] = Field(min_length=1)


class DifficultyRecommendation(BaseModel):
    player_id: str
    quit_probability: float
    difficulty_adjustment: float
    recommended_difficulty: float


class DifficultyResponse(BaseModel):
    recommendations: list[DifficultyRecommendation]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def win_probability(skill: np.ndarray, difficulty: np.ndarray) -> np.ndarray:
    return _sigmoid(WIN_SLOPE * (skill - DIFFICULTY_SCALE * difficulty))


def ideal_difficulty(skill: np.ndarray) -> np.ndarray:
    """The difficulty at which the player wins at the middle of the target band."""
    target = sum(TARGET_BAND) / 2
    return np.clip((skill - math.log(target / (1 - target)) / WIN_SLOPE) / DIFFICULTY_SCALE, -1, 1)


@dataclass
class PlayerPopulation:
    """Simulated players, stepped one encounter at a time, vectorised."""

    skill: np.ndarray
    tilt: np.ndarray
    frustration: np.ndarray
    minutes: np.ndarray
    rng: np.random.Generator

    @classmethod
    def sample(cls, n: int, rng: np.random.Generator) -> PlayerPopulation:
        return cls(
            skill=rng.normal(0, 1, n),
            tilt=rng.uniform(0.4, 1.6, n),
            frustration=np.zeros(n),
            minutes=rng.uniform(0, 60, n),
            rng=rng,
        )

    def play(self, difficulty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One encounter each: (features [n, 7], quit flags [n])."""
        rng, n = self.rng, len(self.skill)
        gap = self.skill - DIFFICULTY_SCALE * difficulty
        won = rng.random(n) < win_probability(self.skill, difficulty)
        duration_s = np.clip(rng.normal(180 + 60 * np.exp(-np.abs(gap)), 40), 20, MAX_DURATION_S)
        damage = np.clip(_sigmoid(-gap) + rng.normal(0, 0.1, n) - 0.2 * won, 0, 1)
        accuracy = np.clip(0.8 * _sigmoid(0.8 * self.skill) + rng.normal(0, 0.05, n), 0, 1)
        deaths = np.where(won, 0, 1 + rng.poisson(np.clip(-gap, 0, 3)))
        retries = np.where(won, 0, rng.poisson(0.8 * self.tilt))
        self.frustration = np.maximum(
            0.75 * self.frustration + (~won) * 0.6 * self.tilt + 0.08 * deaths - 0.35 * won, 0
        )
        self.minutes = self.minutes + duration_s / 60.0
        quit_hazard = 0.4 * _sigmoid(3.5 * (self.frustration - 2.2)) + 0.003
        quits = rng.random(n) < quit_hazard
        features = encounter_features(
            won, duration_s, damage, accuracy, deaths, retries, difficulty
        )
        return features, quits

    def session(self, difficulty: np.ndarray) -> np.ndarray:
        return session_features(self.minutes, difficulty)


class DifficultyTuning(TrainableFamily[DifficultyRequest, DifficultyResponse]):
    description = "Player telemetry window → quit risk and difficulty adjustment"
    contract = FamilyContract(
        name="difficulty-tuning",
        inputs=(
            TensorSpec("encounters", "float32", (None, WINDOW, len(ENCOUNTER_FEATURES))),
            TensorSpec("session", "float32", (None, len(SESSION_FEATURES))),
        ),
        outputs=(
            TensorSpec("quit_probability", "float32", (None,)),
            TensorSpec("difficulty_adjustment", "float32", (None,), "Add to the difficulty"),
        ),
        opset=18,
    )
    headline_metric = "quit_auc"
    game_route = GameRoute(
        "/difficulty/recommend",
        "Quit risk and a difficulty adjustment for each player.",
        request_model=DifficultyRequest,
        response_model=DifficultyResponse,
        batch_field="players",
        routing_key=lambda request: request.players[0].player_id,
        # A player's recommendation moves slowly: theirs of moments ago may stand in.
        row_keys=lambda request: [player.player_id for player in request.players],
    )
    rollout_thresholds = MappingProxyType({"max_divergence": 0.15})
    serving_defaults = MappingProxyType(
        {"deadline_ms": 50.0, "priority": "normal", "cache_ttl_s": 30.0}
    )
    fallback_policy = "no adjustment; the population's quit rate"

    def make_dataset(self, samples: int, seed: int) -> Dataset:
        rng = np.random.default_rng(seed)
        players = PlayerPopulation.sample(samples, rng)
        difficulty = rng.uniform(-1, 1, samples)
        window = []
        for _ in range(WINDOW + 5):
            # Designers move difficulty around; the data must show its effect.
            difficulty = np.clip(difficulty + rng.normal(0, 0.1, samples), -1, 1)
            features, _ = players.play(difficulty)
            window.append(features)
        session = players.session(difficulty)
        quit_soon = np.zeros(samples, dtype=bool)
        for _ in range(QUIT_HORIZON):
            quit_soon |= players.play(difficulty)[1]
        return Dataset(
            inputs={
                "encounters": np.stack(window[-WINDOW:], axis=1).astype(np.float32),
                "session": session.astype(np.float32),
            },
            targets={
                "quit": quit_soon.astype(np.float32),
                "adjustment": np.clip(ideal_difficulty(players.skill) - difficulty, -1, 1).astype(
                    np.float32
                ),
            },
        )

    def build_module(self) -> torch.nn.Module:
        from models.difficulty.network import DifficultyNet

        return DifficultyNet(WINDOW * len(ENCOUNTER_FEATURES) + len(SESSION_FEATURES))

    def loss(
        self,
        module: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        from models.difficulty import network

        return network.loss(module, inputs, targets)

    def evaluate(self, predict: Predictor, samples: int, seed: int) -> dict[str, float]:
        """Quit AUC, and closed-loop sessions steered by the model vs left alone."""
        held_out = self.make_dataset(samples, seed + 10_000)
        outputs = predict(held_out.inputs)
        quit_labels = held_out.targets["quit"]
        recent_losses = 1.0 - held_out.inputs["encounters"][:, -3:, 0].mean(axis=1)
        steered = simulate_sessions(predict, players=1000, seed=seed + 20_000)
        fixed = simulate_sessions(None, players=1000, seed=seed + 20_000)
        return {
            "quit_auc": roc_auc(quit_labels, outputs["quit_probability"]),
            "quit_auc_recent_losses_baseline": roc_auc(quit_labels, recent_losses),
            "quit_rate": float(quit_labels.mean()),
            "adjustment_mae": float(
                np.abs(outputs["difficulty_adjustment"] - held_out.targets["adjustment"]).mean()
            ),
            "band_distance_steered": steered["band_distance"],
            "band_distance_fixed": fixed["band_distance"],
            "in_band_share_steered": steered["in_band_share"],
            "in_band_share_fixed": fixed["in_band_share"],
            "session_quit_rate_steered": steered["quit_rate"],
            "session_quit_rate_fixed": fixed["quit_rate"],
        }

    def invalid_rows(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        bad = super().invalid_rows(outputs)
        if bad.all():
            return bad
        with np.errstate(invalid="ignore"):
            quit_p, adjust = outputs["quit_probability"], outputs["difficulty_adjustment"]
            off = (quit_p < 0) | (quit_p > 1) | (np.abs(adjust) > 1)
        return np.asarray(bad | off)

    def divergence(
        self, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]
    ) -> np.ndarray:
        """The shift in recommended adjustment (a range of 2 scaled to 1) and quit risk."""
        shift = np.abs(reference["difficulty_adjustment"] - candidate["difficulty_adjustment"]) / 2
        risk = np.abs(reference["quit_probability"] - candidate["quit_probability"])
        return np.asarray(np.clip(np.maximum(shift, risk), 0.0, 1.0))

    def edge_cases(self) -> list[dict[str, np.ndarray]]:
        shape = (3, WINDOW, len(ENCOUNTER_FEATURES))
        return [
            {"encounters": np.zeros(shape, np.float32), "session": np.zeros((3, 2), np.float32)},
            {"encounters": np.ones(shape, np.float32), "session": np.ones((3, 2), np.float32)},
            {
                "encounters": np.full(shape, -1.0, np.float32),
                "session": np.full((3, 2), -1.0, np.float32),
            },
        ]

    def fallback_outputs(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(inputs["session"])
        return {
            "quit_probability": np.full(rows, BASE_QUIT_RATE, np.float32),
            "difficulty_adjustment": np.zeros(rows, np.float32),
        }

    def encode(self, request: DifficultyRequest) -> dict[str, np.ndarray]:
        raw = np.asarray(
            [
                [
                    (e.won, e.duration_s, e.damage_taken, e.accuracy, e.deaths, e.retries,
                     e.difficulty)
                    for e in player.encounters[-WINDOW:]
                ]
                for player in request.players
            ],
            dtype=np.float64,
        )  # fmt: skip
        minutes = np.asarray([p.session_minutes for p in request.players])
        difficulty = np.asarray([p.current_difficulty for p in request.players])
        return {
            "encounters": encounter_features(*np.moveaxis(raw, -1, 0)).astype(np.float32),
            "session": session_features(minutes, difficulty).astype(np.float32),
        }

    def decode(
        self, request: DifficultyRequest, outputs: dict[str, np.ndarray]
    ) -> DifficultyResponse:
        """One recommendation per player, built from the model's own (checked) outputs:
        the clip over all players at once (np.clip per player cost 2.5 µs each), the
        rounding Python's, per value."""
        players = request.players
        adjust = outputs["difficulty_adjustment"]
        # In the outputs' dtype, as the per-player arithmetic it replaces: a Python
        # float plus a float32 output is a float32 (NumPy's rule for Python scalars).
        current = np.fromiter((p.current_difficulty for p in players), adjust.dtype, len(players))
        recommended = np.clip(current + adjust, -1, 1)
        recommendations = [
            DifficultyRecommendation.model_construct(
                player_id=p.player_id,
                quit_probability=round(q, 6),
                difficulty_adjustment=round(a, 6),
                recommended_difficulty=round(r, 6),
            )
            for p, q, a, r in zip(
                players,
                outputs["quit_probability"].tolist(),
                adjust.tolist(),
                recommended.tolist(),
                strict=True,
            )
        ]
        return DifficultyResponse.model_construct(recommendations=recommendations)


def simulate_sessions(
    predict: Predictor | None, players: int, seed: int, encounters: int = 60, every: int = 5
) -> dict[str, float]:
    """Play sessions; with ``predict``, apply its adjustment every ``every`` encounters.

    Both arms use the same seed, hence the same players and dice, so the
    difference is the recommendation alone.
    """
    rng = np.random.default_rng(seed)
    population = PlayerPopulation.sample(players, rng)
    difficulty = rng.uniform(-1, 1, players)
    active = np.ones(players, dtype=bool)
    history: list[np.ndarray] = []
    distances, in_band = [], []
    low, high = TARGET_BAND
    for step in range(encounters):
        if predict is not None and step >= WINDOW and step % every == 0:
            out = predict(
                {
                    "encounters": np.stack(history[-WINDOW:], axis=1).astype(np.float32),
                    "session": population.session(difficulty).astype(np.float32),
                }
            )
            difficulty = np.clip(difficulty + out["difficulty_adjustment"], -1, 1)
        features, quits = population.play(difficulty)
        history.append(features)
        if step >= WINDOW:
            p_win = win_probability(population.skill, difficulty)[active]
            distances.append(np.maximum(np.maximum(low - p_win, p_win - high), 0))
            in_band.append((p_win >= low) & (p_win <= high))
        active &= ~quits
    return {
        "band_distance": float(np.concatenate(distances).mean()),
        "in_band_share": float(np.concatenate(in_band).mean()),
        "quit_rate": float(1.0 - active.mean()),
    }
