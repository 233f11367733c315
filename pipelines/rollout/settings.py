"""How a rollout proceeds and what it tolerates, per family."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models import FAMILIES, get_family
from models.errors import ModelNotFoundError
from models.overrides import merged, merged_each


class RolloutStep(BaseModel):
    """One stage: a traffic weight, an optional shadow share, and how long it bakes."""

    name: str
    weight: float = Field(ge=0, le=1, description="Share of players served by the challenger")
    shadow: float = Field(default=0.0, ge=0, le=1, description="Share mirrored, answers unseen")
    bake_s: float = Field(gt=0, description="Least time the step runs before it can pass")


class Thresholds(BaseModel):
    """What a challenger may not exceed, measured against the champion in the same window."""

    # A family's declared defaults land here: a misspelt one must not pass unseen.
    model_config = ConfigDict(extra="forbid")

    min_requests: int = Field(default=50, ge=1, description="Samples before a step can pass")
    max_error_rate_increase: float = Field(default=0.01, ge=0)
    max_invalid_rate: float = Field(default=0.0, ge=0, description="NaN, ranges, sums")
    min_latency_samples: int = Field(
        default=200, ge=1, description="A p99 over fewer samples is just the slowest one"
    )
    max_p99_ratio: float = Field(default=2.0, ge=1, description="Challenger p99 / champion p99")
    p99_slack_ms: float = Field(default=5.0, ge=0, description="Ignored differences, in ms")
    max_divergence: float = Field(default=0.25, ge=0, le=1, description="Mean, on same inputs")


class Preflight(BaseModel):
    """Offline gates, before the challenger sees any traffic."""

    enabled: bool = True
    quality_tolerance: float = Field(
        default=0.02, ge=0, description="How far below the champion's headline metric is allowed"
    )
    eval_samples: int = Field(default=5_000, ge=100)
    eval_seed: int = 12_345
    replay_requests: int = Field(
        default=2_000, ge=0,
        description="The last recorded requests (serving.payload_log) both versions replay "
        "offline; 0 skips the replay.",
    )  # fmt: skip
    replay_max_invalid_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of replayed rows the challenger may break."
    )
    replay_max_divergence: float = Field(
        default=0.3, ge=0,
        description="Mean behaviour divergence from the champion allowed on replayed rows.",
    )  # fmt: skip


def default_steps() -> list[RolloutStep]:
    return [
        RolloutStep(name="shadow", weight=0.0, shadow=1.0, bake_s=30),
        RolloutStep(name="5%", weight=0.05, bake_s=30),
        RolloutStep(name="25%", weight=0.25, bake_s=30),
        RolloutStep(name="50%", weight=0.5, bake_s=30),
        RolloutStep(name="100%", weight=1.0, bake_s=30),
    ]


class FamilyRollout(BaseModel):
    steps: list[RolloutStep] = Field(default_factory=default_steps, min_length=1)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    preflight: Preflight = Field(default_factory=Preflight)


class RolloutSettings(BaseModel):
    poll_interval_s: float = Field(default=2.0, gt=0, description="How often MLflow is read")
    decision_interval_s: float = Field(default=0.5, gt=0)
    families: dict[str, FamilyRollout] = Field(
        default_factory=lambda: {name: family_defaults(name) for name in FAMILIES},
        description="Per family; each family declares its own thresholds (its "
        "rollout_thresholds), and a family left out here rolls out on them.",
    )

    @field_validator("families", mode="before")
    @classmethod
    def _over_declared_defaults(cls, given: Any) -> Any:
        return merged_each(given, over_declared)

    def with_declared_defaults(self) -> RolloutSettings:
        """Each family's block merged again over its declared thresholds (spec families)."""
        families = {
            name: FamilyRollout.model_validate(over_declared(name, block))
            for name, block in self.families.items()
        }
        return self.model_copy(update={"families": families})

    def family(self, name: str) -> FamilyRollout:
        return self.families[name] if name in self.families else family_defaults(name)


def family_defaults(name: str) -> FamilyRollout:
    thresholds = Thresholds.model_validate(get_family(name).rollout_thresholds)
    return FamilyRollout(thresholds=thresholds)


def over_declared(name: str, given: Any) -> Any:
    """A family's rollout block as given, field by field over its declared thresholds."""
    try:
        declared = {"thresholds": dict(get_family(name).rollout_thresholds)}
    except ModelNotFoundError:  # not registered yet: with_declared_defaults merges it later
        return given
    return merged(declared, given)
