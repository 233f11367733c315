"""Per-version measurements over a rollout step's window.

Ingress replicas record into a local ``MetricsWindow`` and periodically merge
it into one collector, so the rollout controller sees every replica's traffic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Enough samples for a stable p99 without unbounded memory at high traffic.
RESERVOIR = 20_000


@dataclass
class VersionWindow:
    """What one version did in the current window."""

    version: str = ""
    requests: int = 0
    errors: int = 0
    invalid: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    divergences: list[float] = field(default_factory=list)

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
            _reservoir_add(self.latencies_ms, latency_ms, self.requests)
        if divergence is not None:
            _reservoir_add(self.divergences, divergence, self.requests)

    def merge(self, other: VersionWindow) -> None:
        self.version = other.version or self.version
        self.requests += other.requests
        self.errors += other.errors
        self.invalid += other.invalid
        self.latencies_ms = (self.latencies_ms + other.latencies_ms)[-RESERVOIR:]
        self.divergences = (self.divergences + other.divergences)[-RESERVOIR:]

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else None
        return {
            "version": self.version,
            "requests": self.requests,
            "error_rate": self.errors / self.requests if self.requests else 0.0,
            "invalid_rate": self.invalid / self.requests if self.requests else 0.0,
            "p50_ms": float(np.percentile(lat, 50)) if lat is not None else None,
            "p99_ms": float(np.percentile(lat, 99)) if lat is not None else None,
            "divergence": float(np.mean(self.divergences)) if self.divergences else None,
            "compared": len(self.divergences),
        }


def _reservoir_add(samples: list[float], value: float, seen: int) -> None:
    if len(samples) < RESERVOIR:
        samples.append(value)
        return
    slot = random.randrange(seen)
    if slot < RESERVOIR:
        samples[slot] = value


@dataclass
class FamilyWindow:
    champion: VersionWindow = field(default_factory=VersionWindow)
    challenger: VersionWindow = field(default_factory=VersionWindow)

    def merge(self, other: FamilyWindow) -> None:
        self.champion.merge(other.champion)
        self.challenger.merge(other.challenger)

    def summary(self) -> dict[str, dict[str, Any]]:
        return {"champion": self.champion.summary(), "challenger": self.challenger.summary()}


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
