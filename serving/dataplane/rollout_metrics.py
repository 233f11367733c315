"""Per-version measurements over a rollout step's window.

Ingress replicas record into a local ``MetricsWindow`` and periodically merge
it into one collector, so the rollout controller sees every replica's traffic.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# Enough samples for a stable p99 without unbounded memory at high traffic.
RESERVOIR = 20_000


@dataclass
class Reservoir:
    """A uniform sample of at most ``RESERVOIR`` of the ``seen`` values (algorithm R)."""

    samples: list[float] = field(default_factory=list)
    seen: int = 0

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.samples) < RESERVOIR:
            self.samples.append(value)
            return
        slot = random.randrange(self.seen)
        if slot < RESERVOIR:
            self.samples[slot] = value

    def merge(self, other: Reservoir) -> None:
        """A uniform sample of both windows: each side weighs what it saw, not what it kept.

        Keeping the last samples instead would lean the merged p99 toward
        whichever replica flushed last.
        """
        seen = self.seen + other.seen
        if len(self.samples) + len(other.samples) <= RESERVOIR:
            self.samples = self.samples + other.samples
        else:
            mine = round(RESERVOIR * self.seen / seen)
            mine = min(max(mine, RESERVOIR - len(other.samples)), len(self.samples))
            self.samples = random.sample(self.samples, mine) + random.sample(
                other.samples, RESERVOIR - mine
            )
        self.seen = seen


@dataclass(frozen=True)
class WindowSummary:
    """What one version did in a window, as the canary policy judges it."""

    version: str
    requests: int
    error_rate: float
    invalid_rate: float
    p50_ms: float | None  # None: no latency measured yet
    p99_ms: float | None
    divergence: float | None  # mean, over the requests compared with the other version
    compared: int

    def figures(self) -> dict[str, float]:
        """The measured figures, for a rollout's record."""
        values = {
            "requests": self.requests,
            "error_rate": self.error_rate,
            "invalid_rate": self.invalid_rate,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "divergence": self.divergence,
        }
        return {name: float(value) for name, value in values.items() if value is not None}


@dataclass(frozen=True)
class RolloutWindow:
    """Champion and challenger over the same window: what serving hands the controller."""

    champion: WindowSummary
    challenger: WindowSummary

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return asdict(self)


@dataclass
class VersionWindow:
    """What one version did in the current window."""

    version: str = ""
    requests: int = 0
    errors: int = 0
    invalid: int = 0
    latencies_ms: Reservoir = field(default_factory=Reservoir)
    divergences: Reservoir = field(default_factory=Reservoir)

    def record(
        self,
        version: str,
        latency_ms: float | None,
        error: bool = False,
        invalid: bool = False,
        divergence: float | None = None,
    ) -> None:
        self.version = version
        self.requests += 1
        self.errors += int(error)
        self.invalid += int(invalid)
        if latency_ms is not None:
            self.latencies_ms.add(latency_ms)
        if divergence is not None:
            self.divergences.add(divergence)

    def merge(self, other: VersionWindow) -> None:
        self.version = other.version or self.version
        self.requests += other.requests
        self.errors += other.errors
        self.invalid += other.invalid
        self.latencies_ms.merge(other.latencies_ms)
        self.divergences.merge(other.divergences)

    def summary(self) -> WindowSummary:
        latencies, divergences = self.latencies_ms.samples, self.divergences.samples
        lat = np.asarray(latencies) if latencies else None
        return WindowSummary(
            version=self.version,
            requests=self.requests,
            error_rate=self.errors / self.requests if self.requests else 0.0,
            invalid_rate=self.invalid / self.requests if self.requests else 0.0,
            p50_ms=float(np.percentile(lat, 50)) if lat is not None else None,
            p99_ms=float(np.percentile(lat, 99)) if lat is not None else None,
            divergence=float(np.mean(divergences)) if divergences else None,
            compared=self.divergences.seen,
        )


@dataclass
class FamilyWindow:
    champion: VersionWindow = field(default_factory=VersionWindow)
    challenger: VersionWindow = field(default_factory=VersionWindow)

    def merge(self, other: FamilyWindow) -> None:
        self.champion.merge(other.champion)
        self.challenger.merge(other.challenger)

    def summary(self) -> RolloutWindow:
        return RolloutWindow(self.champion.summary(), self.challenger.summary())


class MetricsWindows:
    """Windows by family; the collector actor and each ingress hold one."""

    def __init__(self) -> None:
        self.families: dict[str, FamilyWindow] = {}

    def family(self, name: str) -> FamilyWindow:
        return self.families.setdefault(name, FamilyWindow())

    def drain(self) -> dict[str, FamilyWindow]:
        drained, self.families = self.families, {}
        return drained

    def merge(self, windows: dict[str, FamilyWindow]) -> None:
        for name, window in windows.items():
            self.family(name).merge(window)
