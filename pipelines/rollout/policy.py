"""The canary decision: a pure function of what was measured in a step's window."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pipelines.rollout.settings import Thresholds
from serving.dataplane.rollout_metrics import WindowSummary

Action = Literal["pass", "fail", "wait"]


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str


def judge(
    champion: WindowSummary,
    challenger: WindowSummary,
    limits: Thresholds,
    *,
    baked: bool = True,
) -> Verdict:
    """Compare the challenger with the champion over the same window.

    Invalid outputs fail at once, whatever the sample size: one NaN is proof.
    Errors and behaviour wait for ``min_requests`` samples; latency, judged last,
    for ``min_latency_samples``, since a p99 over a few samples is their maximum.
    A latency breach only fails once the step has ``baked``: a p99 taken early in
    a window is one scheduling hiccup on a busy host, and the full window is what
    a player would feel.
    """
    seen = challenger.requests
    if seen == 0:
        return Verdict("wait", "no challenger traffic yet")
    if challenger.invalid_rate > limits.max_invalid_rate:
        return Verdict(
            "fail",
            f"invalid outputs: {challenger.invalid_rate:.1%} of {seen} requests "
            f"(limit {limits.max_invalid_rate:.1%})",
        )
    if seen < limits.min_requests:
        return Verdict("wait", f"{seen} of {limits.min_requests} challenger requests")
    error_limit = champion.error_rate + limits.max_error_rate_increase
    if challenger.error_rate > error_limit:
        return Verdict(
            "fail",
            f"error rate {challenger.error_rate:.1%} above {error_limit:.1%} "
            f"(champion {champion.error_rate:.1%})",
        )
    if challenger.compared < limits.min_requests or challenger.divergence is None:
        return Verdict("wait", f"{challenger.compared} behaviour comparisons so far")
    if challenger.divergence > limits.max_divergence:
        return Verdict(
            "fail",
            f"behaviour diverges from the champion: {challenger.divergence:.3f} "
            f"above {limits.max_divergence:.3f}",
        )
    latency_samples = min(champion.requests, seen)
    if latency_samples < limits.min_latency_samples:
        return Verdict("wait", f"{latency_samples} of {limits.min_latency_samples} latency samples")
    if champion.p99_ms is None or challenger.p99_ms is None:
        return Verdict("wait", "no latency measured yet for one of the versions")
    latency_limit = max(
        champion.p99_ms * limits.max_p99_ratio, champion.p99_ms + limits.p99_slack_ms
    )
    if challenger.p99_ms > latency_limit:
        return Verdict(
            "fail" if baked else "wait",
            f"latency: p99 {challenger.p99_ms:.1f} ms above {latency_limit:.1f} ms "
            f"(champion {champion.p99_ms:.1f} ms)",
        )
    return Verdict("pass", "within every threshold")


class StepOutcome(StrEnum):
    PASS = "pass"  # the step is over: next step, or promotion after the last
    FAIL = "fail"  # roll back
    HOLD = "hold"  # judge again on the next pass


def step_outcome(verdict: Verdict, baked: bool, paused: bool, registry_down: bool) -> StepOutcome:
    """What a step does with a verdict.

    A failure ends it even while paused or while MLflow is down: safety does not
    wait. A pass needs the full bake, no operator's pause, and a registry that
    can record it (a step's result that is never recorded did not happen).
    """
    if verdict.action == "fail":
        return StepOutcome.FAIL
    if verdict.action == "pass" and baked and not paused and not registry_down:
        return StepOutcome.PASS
    return StepOutcome.HOLD


def held_because(verdict: Verdict, paused: bool, registry_down: bool) -> str:
    """Why a step is held past its bake, in words."""
    if verdict.action != "pass":
        return verdict.reason
    return "paused by an operator" if paused else "MLflow unreachable" if registry_down else "-"
