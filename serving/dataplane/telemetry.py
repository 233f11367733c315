"""What each family's versions answered, how fast and in how many rows: the platform's metrics.

Ray-free: an ingress replica records every model request here, drains it a few
times a second to the collector (``serving/app/collector.py``) beside the
game-time counts, and ``serving/http/metrics.py`` renders the totals for
Prometheus. Counters and histograms are plain sums, so merging replicas (and a
replica's failed flush back into itself) loses nothing.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from models.errors import GameserveError
from serving.dataplane.events import Event, Shed
from serving.dataplane.game_time import Answer, AnsweredBy, FamilyCounts

# 1 ms steps up to a 50 Hz tick, then coarser: a tick's budget is where the detail matters.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    *(ms / 1000 for ms in range(1, 21)),
    0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
ROWS_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

# Who answered: the champion, the challenger (its cohort during a rollout), the
# family's fallback, or nobody (the request failed before any answer).
Role = Literal[AnsweredBy, "none"]
OK = "ok"

# (family, version, role): version is "" where no version answered.
SeriesKey = tuple[str, str, str]


@dataclass
class Histogram:
    """Prometheus-style: a count per upper bound (the last one +Inf) and the sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def add(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count at or below it) pairs, as Prometheus writes buckets."""
        running, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else f"{bound:g}", running))
        return out

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass
class Telemetry:
    """Requests by outcome, latency and rows per series; in flight by family, right now."""

    requests: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    latency_s: dict[SeriesKey, Histogram] = field(default_factory=dict)
    rows: dict[SeriesKey, Histogram] = field(default_factory=dict)
    # A gauge, not a sum: what this replica holds now. Never drained.
    in_flight: Counter[str] = field(default_factory=Counter)

    def record(
        self, family: str, version: str | None, role: Role, code: str, latency_s: float, rows: int
    ) -> None:
        """One request, answered (``code`` "ok") or failed with an error's stable code."""
        key = (family, version or "", role)
        self.requests[(*key, code)] += 1
        latency = self.latency_s.get(key)
        if latency is None:
            latency = self.latency_s[key] = Histogram(LATENCY_BUCKETS_S)
        latency.observe(latency_s)
        if rows:
            counted = self.rows.get(key)
            if counted is None:
                counted = self.rows[key] = Histogram(ROWS_BUCKETS)
            counted.observe(rows)

    def listen(self, event: Event) -> None:
        """A request refused before any model counts as one that no version answered."""
        if isinstance(event, Shed):
            latency_s = time.monotonic() - event.received
            self.record(event.family, None, "none", event.code, latency_s, 0)

    def busy(self) -> dict[str, int]:
        """Requests in flight now, for the families that have any."""
        return {family: n for family, n in self.in_flight.items() if n}

    def drain(self) -> Telemetry:
        """The sums since the last drain (the gauge stays)."""
        drained = Telemetry(self.requests, self.latency_s, self.rows)
        self.requests, self.latency_s, self.rows = Counter(), {}, {}
        return drained

    def merge(self, other: Telemetry) -> None:
        self.requests.update(other.requests)
        for mine, theirs in ((self.latency_s, other.latency_s), (self.rows, other.rows)):
            for key, histogram in theirs.items():
                if key in mine:
                    mine[key].add(histogram)
                else:
                    mine[key] = Histogram(histogram.bounds, list(histogram.counts), histogram.total)

    def __bool__(self) -> bool:
        return bool(self.requests)


@dataclass(frozen=True)
class RolloutGauges:
    """Where a family's rollout stands: its step, the challenger's share, and what is judged."""

    challenger: str
    step: int
    step_name: str
    weight: float
    shadow: float
    # By role ("champion"/"challenger"), the window figures the controller last judged.
    judged: dict[str, dict[str, float]] = field(default_factory=dict)


class Observation:
    """One request from receipt to its answer or error: enter, say what answered, leave.

    The outcome is the error's stable code, or "ok"; an unexpected exception is
    "internal_error", as the error handler answers it.
    """

    __slots__ = ("_telemetry", "family", "received", "role", "rows", "version")

    def __init__(self, telemetry: Telemetry, family: str, received: float) -> None:
        self._telemetry = telemetry
        self.family = family
        self.received = received
        self.version: str | None = None
        self.role: Role = "none"
        self.rows = 0

    def answered(self, answer: Answer) -> None:
        self.version, self.role, self.rows = answer.version, answer.role, answer.rows

    def __enter__(self) -> Observation:
        self._telemetry.in_flight[self.family] += 1
        return self

    def __exit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        self._telemetry.in_flight[self.family] -= 1
        code = OK if error is None else error_code(error)
        latency_s = time.monotonic() - self.received
        self._telemetry.record(self.family, self.version, self.role, code, latency_s, self.rows)


def error_code(error: BaseException) -> str:
    return error.code if isinstance(error, GameserveError) else GameserveError.code


@dataclass
class MetricsSnapshot:
    """Everything the metrics endpoint renders, summed over every replica."""

    telemetry: Telemetry
    game_time: dict[str, FamilyCounts]
    in_flight: dict[str, int]  # by family, over the ingress replicas heard recently
    ingress_replicas: int
    rollouts: dict[str, RolloutGauges] = field(default_factory=dict)
    # Payload log records by (family, outcome: offered, written, dropped, failed).
    payloads: dict[tuple[str, str], int] = field(default_factory=dict)
    # Each forecasting deployment's demand forecast (the ingress's, and a family's
    # that forecasts its own): the peak request rate of the next lead time, the
    # replica floor it asks for, and the method.
    forecasts: dict[str, tuple[float, int, str]] = field(default_factory=dict)
    # Deployments whose cluster was found full: (replicas held, replicas the load wanted).
    exhausted: dict[str, tuple[int, int]] = field(default_factory=dict)
