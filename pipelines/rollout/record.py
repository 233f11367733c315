"""Every rollout is one MLflow run: its steps, each version's figures, the decision.

Writes are sent in order and kept when MLflow refuses them: a rollout's traffic
does not wait on MLflow, so an outage mid-step must not end it. What could not
be sent goes out with the next write, or when the controller flushes later.
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from models.errors import RegistryUnavailableError
from serving.dataplane.rollout_metrics import RolloutWindow

EXPERIMENT = "gameserve-rollouts"
STATE_TAG = "gameserve.rollout.state"


class RolloutRecord:
    """An MLflow run written through the client, safe from a background thread."""

    def __init__(self, client: MlflowClient, family: str, run_id: str, started_at: float) -> None:
        self.client = client
        self.run_id = run_id
        self.family = family
        self.started_at = started_at  # wall clock: a resumed record keeps its time line
        self.timeline: list[dict[str, Any]] = []
        # Events written before a restart, read back before the first new one is
        # written (None: not read yet), so a resumed rollout's timeline is whole.
        self._earlier: list[dict[str, Any]] | None = []
        self._pending: deque[Callable[[], object]] = deque()

    @classmethod
    def open(
        cls, client: MlflowClient, family: str, champion: str, challenger: str
    ) -> RolloutRecord:
        """A new run for a new rollout."""
        experiment = client.get_experiment_by_name(EXPERIMENT)
        experiment_id = (
            experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
        )
        run_id: str = client.create_run(
            experiment_id,
            run_name=f"{family} v{champion} -> v{challenger}",
            tags={
                "gameserve.family": family,
                "gameserve.champion": champion,
                "gameserve.challenger": challenger,
            },
        ).info.run_id
        return cls(client, family, run_id, time.time())

    @classmethod
    def resume(
        cls, client: MlflowClient, family: str, run_id: str, started_at: float
    ) -> RolloutRecord:
        """The run of a rollout a restarted controller carries on; no MLflow call yet."""
        record = cls(client, family, run_id, started_at)
        record._earlier = None
        return record

    def write(self, action: Callable[[], object]) -> bool:
        """Send ``action`` after what is pending; False if it had to be kept for later."""
        self._pending.append(action)
        return self.flush()

    def flush(self) -> bool:
        """Send what is pending, in order; False while MLflow cannot take it."""
        while self._pending:
            try:
                self._pending[0]()
            except (MlflowException, RegistryUnavailableError, requests.RequestException, OSError):
                return False
            self._pending.popleft()
        return True

    @property
    def unsent(self) -> int:
        return len(self._pending)

    def publish(self, challenger: str, phase: str) -> None:
        """The phase ``gameserve rollout status`` shows, on the registered model."""
        state = json.dumps({"challenger": challenger, "phase": phase, "at": time.time()})
        self.write(lambda: self.client.set_registered_model_tag(self.family, STATE_TAG, state))

    def event(self, event: str, **detail: Any) -> None:
        t_s = round(time.time() - self.started_at, 3)
        self.timeline.append({"t_s": t_s, "event": event, **detail})
        self.write(self._write_timeline)

    def _write_timeline(self) -> None:
        if self._earlier is None:
            self._earlier = self._read_timeline()
        events = {"events": self._earlier + self.timeline}
        self.client.log_dict(self.run_id, events, "timeline.json")

    def _read_timeline(self) -> list[dict[str, Any]]:
        return rollout_timeline(self.client, self.run_id)

    def params(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            self.write(functools.partial(self.client.log_param, self.run_id, key, value))

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        for key, value in values.items():
            log = functools.partial(self.client.log_metric, self.run_id, key, value, step=step or 0)
            self.write(log)

    def step(self, index: int, name: str, window: RolloutWindow, outcome: str) -> None:
        figures = {
            f"{role}_{figure}": value
            for role, summary in (("champion", window.champion), ("challenger", window.challenger))
            for figure, value in summary.figures().items()
        }
        self.metrics(figures, step=index)
        self.event("step", index=index, name=name, outcome=outcome, window=window.as_dict())

    def finish(self, decision: str, reason: str) -> None:
        self.write(lambda: self.client.set_tag(self.run_id, "gameserve.decision", decision))
        self.write(lambda: self.client.set_tag(self.run_id, "gameserve.reason", reason))
        self.event("decision", decision=decision, reason=reason)
        status = RunStatus.FINISHED if decision == "promoted" else RunStatus.KILLED
        self.write(lambda: self.client.set_terminated(self.run_id, RunStatus.to_string(status)))


def recent_rollouts(client: MlflowClient, family: str, limit: int) -> list[dict[str, str]]:
    """The family's latest rollout runs, newest first: who, against whom, and how it ended."""
    experiments = [e.experiment_id for e in client.search_experiments() if e.name == EXPERIMENT]
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.`gameserve.family` = '{family}'",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    return [
        {
            "champion": r.data.tags.get("gameserve.champion", ""),
            "challenger": r.data.tags.get("gameserve.challenger", ""),
            "decision": r.data.tags.get("gameserve.decision", "running"),
            "reason": r.data.tags.get("gameserve.reason", ""),
            "run_id": r.info.run_id,
        }
        for r in runs
    ]


def rollout_steps(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Each figure the rollout judged (``champion_p99_ms``...), as (step, value) per step."""
    run = client.get_run(run_id)
    figures = [k for k in run.data.metrics if k.startswith(("champion_", "challenger_"))]
    return {
        name: sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
        for name in sorted(figures)
    }


def rollout_timeline(client: MlflowClient, run_id: str) -> list[dict[str, Any]]:
    """A rollout run's events in order (``timeline.json``); empty before its first."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(run_id, "timeline.json", folder)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise
        events: list[dict[str, Any]] = json.loads(Path(path).read_text())["events"]
    return events
