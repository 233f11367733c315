"""Every rollout is one MLflow run: its steps, each version's figures, the decision."""

from __future__ import annotations

import time
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import RunStatus

EXPERIMENT = "gameserve-rollouts"
_FIGURES = ("requests", "error_rate", "invalid_rate", "p50_ms", "p99_ms", "divergence")


class RolloutRecord:
    """An MLflow run written through the client, safe from a background thread."""

    def __init__(self, client: MlflowClient, family: str, champion: str, challenger: str) -> None:
        self.client = client
        experiment = client.get_experiment_by_name(EXPERIMENT)
        experiment_id = (
            experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
        )
        self.run_id: str = client.create_run(
            experiment_id,
            run_name=f"{family} v{champion} -> v{challenger}",
            tags={
                "gameserve.family": family,
                "gameserve.champion": champion,
                "gameserve.challenger": challenger,
            },
        ).info.run_id
        self.timeline: list[dict[str, Any]] = []
        self.started = time.monotonic()

    def event(self, event: str, **detail: Any) -> None:
        self.timeline.append(
            {"t_s": round(time.monotonic() - self.started, 3), "event": event, **detail}
        )
        self.client.log_dict(self.run_id, {"events": self.timeline}, "timeline.json")

    def params(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            self.client.log_param(self.run_id, key, value)

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        for key, value in values.items():
            self.client.log_metric(self.run_id, key, value, step=step or 0)

    def step(self, index: int, name: str, window: dict[str, dict[str, Any]], outcome: str) -> None:
        figures = {
            f"{role}_{figure}": float(window[role][figure])
            for role in ("champion", "challenger")
            for figure in _FIGURES
            if window[role].get(figure) is not None
        }
        self.metrics(figures, step=index)
        self.event("step", index=index, name=name, outcome=outcome, window=window)

    def finish(self, decision: str, reason: str) -> None:
        self.client.set_tag(self.run_id, "gameserve.decision", decision)
        self.client.set_tag(self.run_id, "gameserve.reason", reason)
        self.event("decision", decision=decision, reason=reason)
        status = RunStatus.FINISHED if decision == "promoted" else RunStatus.KILLED
        self.client.set_terminated(self.run_id, RunStatus.to_string(status))
