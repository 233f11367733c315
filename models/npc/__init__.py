"""NPC behavior: an NPC's observation → probabilities over its next action.

Labels come from a scripted utility-AI "teacher" (``teacher.py``: the kind of
hand-tuned behavior a designer writes) sampled with noise; the network learns
it by behavior cloning, so a studio can replace the script with something
trained on playtests later without changing the contract. ``features.py``
holds the tensor layout both share.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field

from models.contract import FamilyContract, RequestModel, TensorSpec
from models.family import GameRoute, TrainableFamily
from models.npc.features import (
    ACTIONS,
    FEATURES,
    MAX_ALLIES,
    MAX_COVER,
    MAX_ENEMIES,
    MEMORY_S,
    SENSE_RANGE_M,
    F,
)
from models.npc.teacher import sample_observations, teacher_probabilities
from models.runtime import Predictor
from models.training import Dataset

if TYPE_CHECKING:
    import torch

# Share of labels replaced by a uniformly random action (noisy demonstrations).
LABEL_NOISE = 0.05


class Contact(RequestModel):
    """Something the NPC perceives: an enemy, an ally or a piece of cover."""

    distance_m: float = Field(ge=0, le=10_000, allow_inf_nan=False)
    bearing_deg: float = Field(ge=-360, le=360, allow_inf_nan=False)
    visible: bool = True


class NpcObservation(RequestModel):
    """What one NPC knows this tick."""

    npc_id: str = Field(min_length=1, max_length=128)
    health: float = Field(ge=0, le=1, allow_inf_nan=False, description="0 dead, 1 full")
    armor: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)
    ammo: float = Field(ge=0, le=1, allow_inf_nan=False, description="Magazine fill")
    reserve_ammo: float = Field(default=1.0, ge=0, le=1, allow_inf_nan=False)
    grenades: int = Field(default=0, ge=0, le=3)
    threat: float = Field(ge=0, le=1, allow_inf_nan=False)
    seconds_since_player_seen: float = Field(default=MEMORY_S, ge=0, allow_inf_nan=False)
    alert: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)
    under_fire: bool = False
    in_cover: bool = False
    heard_noise: bool = False
    objective_distance_m: float = Field(default=SENSE_RANGE_M, ge=0, allow_inf_nan=False)
    enemies: list[Contact] = Field(default_factory=list, max_length=MAX_ENEMIES)
    allies: list[Contact] = Field(default_factory=list, max_length=MAX_ALLIES)
    cover: list[Contact] = Field(default_factory=list, max_length=MAX_COVER)
    aggression: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False)
    morale: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False)


class NpcActRequest(RequestModel):
    """All NPCs of one server tick, decided in one call."""

    npcs: list[NpcObservation] = Field(min_length=1)


class NpcDecision(BaseModel):
    npc_id: str
    action: str
    probabilities: dict[str, float]


class NpcActResponse(BaseModel):
    decisions: list[NpcDecision]


def _contact_features(contacts: list[Contact], slots: int, with_visibility: bool) -> list[float]:
    nearest = sorted(contacts, key=lambda c: c.distance_m)[:slots]
    values: list[float] = []
    for slot in range(slots):
        if slot < len(nearest):
            c = nearest[slot]
            rad = math.radians(c.bearing_deg)
            values += [min(c.distance_m / SENSE_RANGE_M, 1.0), math.sin(rad), math.cos(rad)]
            if with_visibility:
                values.append(1.0 if c.visible else 0.0)
        else:
            # An empty slot reads as "far away, straight ahead, unseen".
            values += [1.0, 0.0, 0.0] + ([0.0] if with_visibility else [])
    return values


def observation_features(obs: NpcObservation) -> list[float]:
    """The 40 normalised features of one observation, in ``FEATURES`` order."""
    return [
        obs.health,
        obs.armor,
        obs.ammo,
        obs.reserve_ammo,
        obs.grenades / 3.0,
        obs.threat,
        min(obs.seconds_since_player_seen / MEMORY_S, 1.0),
        obs.alert,
        float(obs.under_fire),
        float(obs.in_cover),
        float(obs.heard_noise),
        min(obs.objective_distance_m / SENSE_RANGE_M, 1.0),
        *_contact_features(obs.enemies, MAX_ENEMIES, with_visibility=True),
        *_contact_features(obs.allies, MAX_ALLIES, with_visibility=False),
        *_contact_features(obs.cover, MAX_COVER, with_visibility=False),
        min(len(obs.enemies) / 8.0, 1.0),
        min(len(obs.allies) / 8.0, 1.0),
        obs.aggression,
        obs.morale,
    ]


class NpcBehavior(TrainableFamily[NpcActRequest, NpcActResponse]):
    """Behavior cloning of the utility-AI teacher."""

    description = "NPC observation → action probabilities (behavior cloning)"
    contract = FamilyContract(
        name="npc-behavior",
        inputs=(TensorSpec("observation", "float32", (None, len(FEATURES)), "FEATURES order"),),
        outputs=(TensorSpec("action_probs", "float32", (None, len(ACTIONS)), "ACTIONS order"),),
        opset=18,
    )
    headline_metric = "teacher_agreement"
    game_route = GameRoute(
        "/npc/act",
        "Decide the next action of every NPC in one server tick.\n\n"
        "Send ``X-Session-Id`` (the match) so a match stays on one model version.",
        request_model=NpcActRequest,
        response_model=NpcActResponse,
        batch_field="npcs",
    )
    rollout_thresholds = MappingProxyType({"max_divergence": 0.2})
    # A tick's AI budget: NPCs are what players see first, so they are served last to go.
    serving_defaults = MappingProxyType({"deadline_ms": 20.0, "priority": "critical"})
    fallback_policy = "the utility-AI script the model was trained from"

    def make_dataset(self, samples: int, seed: int) -> Dataset:
        rng = np.random.default_rng(seed)
        x = sample_observations(samples, rng)
        probs = teacher_probabilities(x)
        labels = (probs.cumsum(axis=1) > rng.random((samples, 1))).argmax(axis=1)
        noisy = rng.random(samples) < LABEL_NOISE
        labels[noisy] = rng.integers(0, len(ACTIONS), int(noisy.sum()))
        return Dataset(
            inputs={"observation": x},
            targets={"action": labels.astype(np.int64), "teacher": probs.argmax(axis=1)},
        )

    def label(self, inputs: dict[str, np.ndarray]) -> Dataset:
        """The teacher's choice for each observation, as recorded traffic has no labels."""
        teacher = teacher_probabilities(inputs["observation"]).argmax(axis=1)
        return Dataset(
            inputs={"observation": inputs["observation"].astype(np.float32)},
            targets={"action": teacher.astype(np.int64), "teacher": teacher},
        )

    def build_module(self) -> torch.nn.Module:
        from models.npc.network import PolicyNet

        return PolicyNet(len(FEATURES), len(ACTIONS))

    def loss(
        self,
        module: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        from models.npc import network

        return network.loss(module, inputs, targets)

    def evaluate(self, predict: Predictor, samples: int, seed: int) -> dict[str, float]:
        """Agreement with the teacher's choice, and the designer's invariants."""
        held_out = self.make_dataset(samples, seed + 10_000)
        probs = predict(held_out.inputs)["action_probs"]
        teacher = held_out.targets["teacher"]
        majority = np.bincount(teacher, minlength=len(ACTIONS)).max() / len(teacher)
        rng = np.random.default_rng(seed + 20_000)
        return {
            "teacher_agreement": float((probs.argmax(axis=1) == teacher).mean()),
            "majority_baseline_agreement": float(majority),
            **{
                f"invariant_{name}": float(check(predict, rng))
                for name, check in INVARIANTS.items()
            },
        }

    def invalid_rows(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        probs = outputs.get("action_probs")
        if probs is None or probs.ndim != 2 or probs.shape[1] != len(ACTIONS):
            return np.ones_like(super().invalid_rows(outputs))  # every row: it is misshapen
        # Checked on every answer, so in two reductions: a NaN or an infinity in a
        # row makes its sum fail the test as well, without a finiteness pass.
        with np.errstate(invalid="ignore"):
            sound = (np.abs(probs.sum(axis=1) - 1.0) <= 1e-3) & (probs.min(axis=1) >= 0)
        return np.asarray(~sound)

    def divergence(
        self, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]
    ) -> np.ndarray:
        """Jensen-Shannon divergence (base 2) between action distributions."""
        p = np.clip(reference["action_probs"].astype(np.float64), 1e-12, 1.0)
        q = np.clip(candidate["action_probs"].astype(np.float64), 1e-12, 1.0)
        m = (p + q) / 2
        js = 0.5 * (p * np.log2(p / m)).sum(axis=1) + 0.5 * (q * np.log2(q / m)).sum(axis=1)
        return np.asarray(np.clip(js, 0.0, 1.0))

    def edge_cases(self) -> list[dict[str, np.ndarray]]:
        zeros = np.zeros((3, len(FEATURES)), dtype=np.float32)
        ones = np.ones((3, len(FEATURES)), dtype=np.float32)
        extremes = np.tile(np.array([-1.0, 1.0], dtype=np.float32), (4, len(FEATURES) // 2))
        return [{"observation": zeros}, {"observation": ones}, {"observation": extremes}]

    def fallback_outputs(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        probs = teacher_probabilities(inputs["observation"].astype(np.float64))
        return {"action_probs": probs.astype(np.float32)}

    def encode(self, request: NpcActRequest) -> dict[str, np.ndarray]:
        rows = [observation_features(obs) for obs in request.npcs]
        return {"observation": np.asarray(rows, dtype=np.float32)}

    def decode(self, request: NpcActRequest, outputs: dict[str, np.ndarray]) -> NpcActResponse:
        probs = outputs["action_probs"]
        # Rounded and picked in numpy, validated in one pydantic call: a 128-NPC tick
        # decodes several times faster than with a round() and a model per value.
        best = probs.argmax(axis=1).tolist()
        rounded = np.round(probs.astype(np.float64), 6).tolist()
        decisions = [
            {
                "npc_id": obs.npc_id,
                "action": ACTIONS[action],
                "probabilities": dict(zip(ACTIONS, row, strict=True)),
            }
            for obs, action, row in zip(request.npcs, best, rounded, strict=True)
        ]
        return NpcActResponse.model_validate({"decisions": decisions})


def _mass(probs: np.ndarray, actions: tuple[str, ...]) -> np.ndarray:
    return np.asarray(probs[:, [ACTIONS.index(a) for a in actions]].sum(axis=1))


def _invariant_crisis(predict: Predictor, rng: np.random.Generator, n: int = 2000) -> float:
    """Low health under high threat: most probability on flee or take cover."""
    x = sample_observations(n, rng)
    x[:, F["health"]] = rng.uniform(0.0, 0.15, n)
    x[:, F["threat"]] = rng.uniform(0.85, 1.0, n)
    probs = predict({"observation": x})["action_probs"]
    return float((_mass(probs, ("flee", "take_cover")) > 0.5).mean())


def _invariant_empty_magazine(predict: Predictor, rng: np.random.Generator, n: int = 2000) -> float:
    """An empty magazine with reserve ammo and nobody in sight: reload first."""
    x = sample_observations(n, rng)
    x[:, F["ammo"]] = 0.0
    x[:, F["reserve_ammo"]] = rng.uniform(0.3, 1.0, n)
    x[:, F["health"]] = rng.uniform(0.6, 1.0, n)
    for slot in range(MAX_ENEMIES):
        x[:, F[f"enemy{slot}_visible"]] = 0.0
    probs = predict({"observation": x})["action_probs"]
    return float((probs.argmax(axis=1) == ACTIONS.index("reload")).mean())


def _invariant_calm(predict: Predictor, rng: np.random.Generator, n: int = 2000) -> float:
    """No enemy, no threat, no noise: the NPC idles or patrols."""
    x = sample_observations(n, rng)
    x[:, F["threat"]] = rng.uniform(0.0, 0.05, n)
    x[:, F["alert"]] = rng.uniform(0.0, 0.2, n)
    x[:, F["heard_noise"]] = 0.0
    x[:, F["under_fire"]] = 0.0
    x[:, F["ammo"]] = rng.uniform(0.5, 1.0, n)
    for slot in range(MAX_ENEMIES):
        base = F[f"enemy{slot}_distance"]
        x[:, base : base + 4] = [1.0, 0.0, 0.0, 0.0]
    x[:, F["enemies_nearby"]] = 0.0
    probs = predict({"observation": x})["action_probs"]
    return float((_mass(probs, ("idle", "patrol")) > 0.5).mean())


INVARIANTS = {
    "crisis_flee_or_cover": _invariant_crisis,
    "empty_magazine_reload": _invariant_empty_magazine,
    "calm_idle_or_patrol": _invariant_calm,
}


__all__ = [
    "ACTIONS",
    "FEATURES",
    "MAX_ALLIES",
    "MAX_COVER",
    "MAX_ENEMIES",
    "MEMORY_S",
    "SENSE_RANGE_M",
    "F",
    "NpcActRequest",
    "NpcActResponse",
    "NpcBehavior",
    "sample_observations",
    "teacher_probabilities",
]
