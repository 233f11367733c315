"""What the rollout tests share: the family, a good training budget, steps and limits."""

from __future__ import annotations

from models import trainable_family
from models.training import TrainSettings
from pipelines.rollout.settings import (
    FamilyRollout,
    Preflight,
    RolloutSettings,
    RolloutStep,
    Thresholds,
)

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
