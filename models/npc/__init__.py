"""NPC behavior: an NPC's observation → probabilities over its next action.

Labels come from a scripted utility-AI "teacher" (``teacher.py``: the kind of
hand-tuned behavior a designer writes) sampled with noise; the network learns
it by behavior cloning, so a studio can replace the script with something
trained on playtests later without changing the contract. ``features.py``
holds the tensor layout both share.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from models.contract import FamilyContract, TensorSpec
from models.family import GameRoute, TrainableFamily
from models.npc.api import Contact, NpcActRequest, NpcActResponse, NpcDecision, NpcObservation
from models.npc.encoding import decode_probabilities, encode_observations
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
        probs = teacher_probabilities(inputs["observation"])
        return {"action_probs": probs.astype(np.float32, order="C")}

    def encode(self, request: NpcActRequest) -> dict[str, np.ndarray]:
        return {"observation": encode_observations(request.npcs)}

    def decode(self, request: NpcActRequest, outputs: dict[str, np.ndarray]) -> NpcActResponse:
        return decode_probabilities(request, outputs["action_probs"])


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
    "Contact",
    "F",
    "NpcActRequest",
    "NpcActResponse",
    "NpcBehavior",
    "NpcDecision",
    "NpcObservation",
    "sample_observations",
    "teacher_probabilities",
]
