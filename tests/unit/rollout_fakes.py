"""A registry, a run record and a serving gateway in memory, for the controller's loop.

They keep what the real ones keep across a controller's death: the registry's
aliases and runs outlive any controller (MLflow does); the gateway outlives one
only when a test says serving survived.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models.errors import RegistryUnavailableError
from pipelines.registry import CHALLENGER, CHAMPION, PREVIOUS
from serving.dataplane.rollout_metrics import RolloutWindow, WindowSummary


class Killed(BaseException):
    """The controller's process dies here (no ``except Exception`` catches it)."""


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def now(self) -> float:
        return self.t


@dataclass
class Run:
    """What MLflow keeps of one rollout run."""

    family: str
    champion: str
    challenger: str
    events: list[dict[str, Any]] = field(default_factory=list)
    steps: list[tuple[int, str, str]] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    decision: tuple[str, str] | None = None


class FakeRecord:
    def __init__(self, registry: FakeRegistry, run_id: str, started_at: float) -> None:
        self.registry, self.run_id, self.started_at = registry, run_id, started_at
        self.pending: list[Callable[[], object]] = []

    @property
    def run(self) -> Run:
        return self.registry.runs[self.run_id]

    def write(self, action: Callable[[], object]) -> bool:
        self.pending.append(action)
        return self.flush()

    def flush(self) -> bool:
        if self.registry.down:
            return False
        while self.pending:
            self.pending.pop(0)()
        return True

    def publish(self, challenger: str, phase: str) -> None:
        self.write(lambda: self.run.published.append(phase))

    def event(self, event: str, **detail: Any) -> None:
        self.write(lambda: self.run.events.append({"event": event, **detail}))

    def params(self, values: dict[str, Any]) -> None:
        pass

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        pass

    def step(self, index: int, name: str, window: RolloutWindow, outcome: str) -> None:
        self.write(lambda: self.run.steps.append((index, name, outcome)))

    def finish(self, decision: str, reason: str) -> None:
        self.write(lambda: setattr(self.run, "decision", (str(decision), reason)))


class FakeRegistry:
    def __init__(self, family: str, champion: str) -> None:
        self.family = family
        self.alias: dict[str, str] = {CHAMPION: champion}
        self.runs: dict[str, Run] = {}
        self.version_tags: dict[str, dict[str, str]] = {}
        self.down = False
        self._ids = itertools.count(1)

    def _reachable(self) -> None:
        if self.down:
            raise RegistryUnavailableError("model registry request failed: connection refused")

    def aliases(self, family: str) -> dict[str, str]:
        self._reachable()
        return dict(self.alias)

    def verify_champion(self, family: str, version: str) -> None:
        self._reachable()

    def promote(self, family: str, version: str) -> None:
        self._reachable()
        if self.alias.get(CHAMPION) == version:
            return
        self.alias[PREVIOUS] = self.alias[CHAMPION]
        self.alias[CHAMPION] = version
        if self.alias.get(CHALLENGER) == version:
            del self.alias[CHALLENGER]

    def delete_alias(self, family: str, alias: str) -> None:
        self._reachable()
        self.alias.pop(alias, None)

    def set_version_tag(self, family: str, version: str, key: str, value: str) -> None:
        self._reachable()
        self.version_tags.setdefault(version, {})[key] = value

    def record_event(
        self, family: str, version: str, event: str, details: dict[str, Any] | None = None
    ) -> None:
        self.set_version_tag(family, version, f"event.{event}", str(details))

    def rollout_record(self, family: str, champion: str, challenger: str) -> FakeRecord:
        self._reachable()
        run_id = f"run-{next(self._ids)}"
        self.runs[run_id] = Run(family, champion, challenger)
        return FakeRecord(self, run_id, 0.0)

    def resume_record(self, family: str, run_id: str, started_at: float) -> FakeRecord:
        return FakeRecord(self, run_id, started_at)


def window(challenger_invalid: float = 0.0, requests: int = 500) -> RolloutWindow:
    def summary(version: str, invalid: float) -> WindowSummary:
        return WindowSummary(version, requests, 0.0, invalid, 2.0, 5.0, 0.01, requests)

    return RolloutWindow(champion=summary("1", 0.0), challenger=summary("2", challenger_invalid))


class FakeGateway:
    """Serving: what each family serves, challenger replicas, traffic splits."""

    def __init__(self, family: str, champion: str) -> None:
        self._versions: dict[str, str | None] = {family: champion}
        self._challengers: dict[str, str] = {}
        self._traffic: dict[str, tuple[str, int]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.window = window()
        self.kill_at: int | None = None  # die on this call (counted over calls), after it acts

    def _called(self, name: str, detail: Any) -> None:
        self.calls.append((name, detail))
        if self.kill_at is not None and len(self.calls) == self.kill_at:
            raise Killed(name)

    @property
    def versions(self) -> dict[str, str | None]:
        return dict(self._versions)

    @property
    def challengers(self) -> dict[str, str]:
        return dict(self._challengers)

    def traffic(self, family: str) -> tuple[str, int] | None:
        return self._traffic.get(family)

    def set_version(self, family: str, version: str) -> None:
        self._versions[family] = version
        self._called("set_version", version)

    def start_challenger(self, family: str, version: str) -> None:
        self._challengers[family] = version
        self._traffic.pop(family, None)
        self._called("start_challenger", version)

    def set_traffic(
        self, family: str, weight: float, shadow: float, salt: str, step: int = 0,
        step_name: str = "",
    ) -> None:  # fmt: skip
        self._traffic[family] = (salt, step)
        self._called("set_traffic", step)

    def stop_challenger(self, family: str, promote: bool) -> None:
        version = self._challengers.pop(family, None)
        self._traffic.pop(family, None)
        if promote and version is not None:
            self._versions[family] = version
        self._called("stop_challenger", promote)

    def rollout_metrics(self, family: str, reset: bool = False) -> RolloutWindow:
        return self.window
