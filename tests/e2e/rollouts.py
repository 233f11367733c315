"""What the rollout tests share: the family, a good training budget, steps and limits."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from models import trainable_family
from models.training import TrainSettings
from pipelines.registry import ModelRegistry
from pipelines.rollout.controller import RolloutController
from pipelines.rollout.settings import (
    FamilyRollout,
    Preflight,
    RolloutSettings,
    RolloutStep,
    Thresholds,
)
from pipelines.rollout.state import RolloutStore
from serving.app.gateway import ServeGateway

NPC = trainable_family("npc-behavior")
GOOD = TrainSettings(train_samples=20_000, eval_samples=2_000, epochs=5)
STEPS = [
    RolloutStep(name="shadow", weight=0.0, shadow=1.0, bake_s=2.0),
    RolloutStep(name="10%", weight=0.1, bake_s=2.0),
    RolloutStep(name="50%", weight=0.5, bake_s=2.0),
    RolloutStep(name="100%", weight=1.0, bake_s=2.0),
]
LIMITS = Thresholds(
    min_requests=20,
    min_latency_samples=80,
    max_p99_ratio=2.0,
    p99_slack_ms=10.0,
    max_divergence=0.2,
)


def rollout_settings(preflight: bool, limits: Thresholds = LIMITS) -> RolloutSettings:
    plan = FamilyRollout(
        steps=STEPS,
        thresholds=limits,
        preflight=Preflight(enabled=preflight, quality_tolerance=0.03, eval_samples=2_000),
    )
    return RolloutSettings(poll_interval_s=0.5, decision_interval_s=0.25, families={NPC.name: plan})


@contextlib.contextmanager
def controlled(
    registry: ModelRegistry,
    gateway: ServeGateway,
    settings: RolloutSettings,
    recorded: Path | None = None,
) -> Iterator[RolloutController]:
    """A controller as a fresh stack has one (its own state folder), stopped on the way
    out; a rollout a failed test left mid-way is withdrawn, so later tests share a
    gateway with no challenger on it."""
    with tempfile.TemporaryDirectory(prefix="rollouts-") as folder:
        controller = RolloutController(
            registry, gateway, settings, RolloutStore(Path(folder)), recorded
        )
        try:
            yield controller
        finally:
            controller.stop()
            for family in gateway.challengers:
                gateway.stop_challenger(family, promote=False)
