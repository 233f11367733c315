"""Challengers that go wrong in the ways a rollout must catch: real ONNX models."""

from __future__ import annotations

import torch

from models import trainable_family
from models.export import export_onnx
from models.npc import SENSE_RANGE_M, F

NPC = trainable_family("npc-behavior")
ATTACK = 4
ENEMY0_DISTANCE = F["enemy0_distance"]
POINT_BLANK = 0.5 / SENSE_RANGE_M  # as a share of the sense range, as features hold it


class NanForWoundedNpcs(torch.nn.Module):
    """The champion's behaviour, but NaN whenever an NPC's health is below 0.3."""

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        probs = self.policy(observation)
        wounded = observation[:, :1] < 0.3
        return torch.where(wounded, torch.full_like(probs, float("nan")), probs)


class NanAtPointBlank(torch.nn.Module):
    """The champion's behaviour, but NaN when the nearest enemy is within half a metre.

    The family's generator never places an enemy that close (its nearest is 1.5 m
    away), so every synthetic gate passes it; players in a melee meet it at once.
    """

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        probs = self.policy(observation)
        nearest = observation[:, ENEMY0_DISTANCE : ENEMY0_DISTANCE + 1]
        return torch.where(nearest < POINT_BLANK, torch.full_like(probs, float("nan")), probs)


class Slow(torch.nn.Module):
    """The champion's behaviour after a fixed, large amount of useless arithmetic."""

    def __init__(self, policy: torch.nn.Module, width: int = 2048, layers: int = 6) -> None:
        super().__init__()
        self.policy = policy
        self.weight = torch.nn.Parameter(torch.randn(width, width) / width**0.5)
        self.width, self.layers = width, layers

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        # Depends on the input, so no exporter can fold it away.
        hidden = torch.ones(64, self.width) * (observation.sum() * 0.0 + 1.0)
        for _ in range(self.layers):
            hidden = torch.tanh(hidden @ self.weight)
        return self.policy(observation) + 0.0 * hidden.mean()


class AlwaysAttack(torch.nn.Module):
    """Valid probabilities, all on "attack": sound outputs, broken behaviour."""

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros_like(observation[:, :10])
        logits[:, ATTACK] = 20.0
        return torch.softmax(logits, dim=-1)


def export(module: torch.nn.Module) -> bytes:
    module.eval()
    return export_onnx(module, NPC.contract, NPC.example_inputs(rows=4))


def beyond_onnx_runtime(onnx_model: bytes) -> bytes:
    """The same graph stamped with IR version 14: ``onnx.checker`` passes it, ONNX
    Runtime 1.31 (which reads at most 13) refuses to load it."""
    import onnx

    proto = onnx.load_model_from_string(onnx_model)
    proto.ir_version = 14
    onnx.checker.check_model(proto)
    return proto.SerializeToString()
