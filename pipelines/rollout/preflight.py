"""Offline gates: does the challenger fit the champion's slot before it sees traffic?"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from models import get_family
from models.errors import GameserveError
from models.export import PARITY_TOLERANCE
from models.runtime import OnnxModel, open_verified
from pipelines.registry import TAG_CONTRACT, ModelRegistry
from pipelines.rollout.replay import ReplayResult, replay
from pipelines.rollout.settings import Preflight


@dataclass
class PreflightReport:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    @property
    def reason(self) -> str:
        return "; ".join(f"{name}: {detail}" for name, ok, detail in self.checks if not ok)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))


def preflight(
    registry: ModelRegistry,
    family_name: str,
    champion: str,
    challenger: str,
    gates: Preflight,
    recorded: Path | None = None,
) -> PreflightReport:
    """Contract, artifact and parity, quality on the family's evaluation set, and the
    challenger's behaviour on recorded traffic (``recorded``: the payload log's folder)."""
    family = get_family(family_name)
    report = PreflightReport()
    contracts = {
        v: registry.version_tags(family_name, v).get(TAG_CONTRACT) for v in (champion, challenger)
    }
    report.add(
        "contract",
        contracts[champion] == contracts[challenger] == family.contract.fingerprint(),
        f"champion {contracts[champion]}, challenger {contracts[challenger]}",
    )
    try:
        paths = {v: registry.resolve_version(family_name, v).path for v in (champion, challenger)}
    except GameserveError as exc:  # missing, corrupt, or not runnable in ONNX Runtime
        report.add("artifact", False, exc.message)
        return report
    if family.trainable:
        # Only a version gameserve built from torch has a parity figure to check.
        parity = registry.version_metrics(family_name, challenger).get("parity_max_abs_diff")
        report.add(
            "parity",
            parity is not None and parity <= PARITY_TOLERANCE,
            f"max |torch - onnx| {parity} (limit {PARITY_TOLERANCE})",
        )
    headline = family.headline_metric
    scores = {}
    models: dict[str, OnnxModel] = {}
    for role, version in (("champion", champion), ("challenger", challenger)):
        model = models[role] = open_verified(
            paths[version], family.contract, family.example_inputs(rows=2),
            label=f"{role} v{version}", prefer_gpu=False,
        )  # fmt: skip
        invalid = family.invalid_rows(model.predict(family.example_inputs(256, gates.eval_seed)))
        if role == "challenger" and invalid.any():
            report.add("outputs", False, f"{int(invalid.sum())} of 256 rows invalid")
            return report
        if headline is not None:
            metrics = family.evaluate(model.predict, gates.eval_samples, gates.eval_seed)
            scores[role] = metrics[headline]
            report.metrics[f"preflight_{role}_{headline}"] = metrics[headline]
    if headline is None:
        # No evaluation set: the canary's live gates are the whole judgement.
        report.add("quality", True, "no offline evaluation declared; judged on live traffic")
    else:
        floor = scores["champion"] - gates.quality_tolerance
        report.add(
            "quality",
            scores["challenger"] >= floor,
            f"{headline} {scores['challenger']:.4f} vs champion {scores['champion']:.4f} "
            f"(floor {floor:.4f})",
        )
    if recorded is not None and gates.replay_requests > 0:
        _judge_replay(report, replay(recorded, family, models, gates.replay_requests), gates)
    return report


def _judge_replay(report: PreflightReport, result: ReplayResult | None, gates: Preflight) -> None:
    if result is None:
        report.add("replay", True, "no recorded traffic yet")
        return
    report.metrics.update(result.metrics())
    invalid = result.invalid_rate("challenger")
    if invalid > gates.replay_max_invalid_rate:
        report.add(
            "replay",
            False,
            f"{result.invalid_rows['challenger']} of {result.rows} recorded rows invalid "
            f"({result.requests} requests; limit {gates.replay_max_invalid_rate:.2%})",
        )
        return
    divergence = result.divergence
    ok = divergence is None or divergence <= gates.replay_max_divergence
    report.add(
        "replay",
        ok,
        f"divergence {divergence if divergence is None else round(divergence, 4)} from the "
        f"champion on {result.rows} recorded rows (limit {gates.replay_max_divergence})",
    )
