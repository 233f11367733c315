"""Replay: champion and challenger on requests real players sent, before any player meets it.

A family's generator only makes the situations its authors thought of; recorded
traffic (the serving payload log, ``serving/dataplane/payload_files.py``) holds
the ones players made. Pre-flight runs the last N recorded requests through
both versions offline and judges what the challenger does on them: invalid
outputs, and how far its behaviour moves from the champion's.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.family import AnyFamily
from models.runtime import OnnxModel
from serving.dataplane.payload_files import read, tensors

# Rows per model call: recorded requests are grouped by shape and run in chunks.
CHUNK_ROWS = 1024


@dataclass(frozen=True)
class ReplayResult:
    requests: int
    rows: int
    invalid_rows: dict[str, int]  # by role
    divergence: float | None  # mean over rows both versions answered validly

    def invalid_rate(self, role: str) -> float:
        return self.invalid_rows[role] / self.rows if self.rows else 0.0

    def metrics(self) -> dict[str, float]:
        figures = {
            "replay_requests": float(self.requests),
            "replay_rows": float(self.rows),
            "replay_champion_invalid_rate": self.invalid_rate("champion"),
            "replay_challenger_invalid_rate": self.invalid_rate("challenger"),
        }
        if self.divergence is not None:
            figures["replay_divergence"] = self.divergence
        return figures


def replay(
    root: Path, family: AnyFamily, models: dict[str, OnnxModel], last: int
) -> ReplayResult | None:
    """The last ``last`` recorded requests of ``family`` through ``models`` (by role); None
    when nothing is recorded."""
    table = read(root, family.name, last=last)
    if table is None or table.num_rows == 0:
        return None
    batches = _by_shape([tensors(table, "input", row) for row in range(table.num_rows)])
    invalid = dict.fromkeys(models, 0)
    divergences: list[np.ndarray] = []
    rows = 0
    for batch in batches:
        rows += len(next(iter(batch.values())))
        outputs = {role: model.predict(batch) for role, model in models.items()}
        bad = {role: family.invalid_rows(out) for role, out in outputs.items()}
        for role, flags in bad.items():
            invalid[role] += int(flags.sum())
        both = ~(bad["champion"] | bad["challenger"])
        if both.any():
            champion = {k: v[both] for k, v in outputs["champion"].items()}
            challenger = {k: v[both] for k, v in outputs["challenger"].items()}
            divergences.append(family.divergence(champion, challenger))
    divergence = float(np.concatenate(divergences).mean()) if divergences else None
    return ReplayResult(table.num_rows, rows, invalid, divergence)


def _by_shape(requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Requests whose tensors share their row shapes, concatenated into chunks."""
    groups: defaultdict[tuple[tuple[int, ...], ...], list[dict[str, np.ndarray]]]
    groups = defaultdict(list)
    for request in requests:
        groups[tuple(t.shape[1:] for t in request.values())].append(request)
    chunks = []
    for members in groups.values():
        names = list(members[0])
        joined = {name: np.concatenate([m[name] for m in members]) for name in names}
        total = len(joined[names[0]])
        for start in range(0, total, CHUNK_ROWS):
            chunks.append({k: v[start : start + CHUNK_ROWS] for k, v in joined.items()})
    return chunks
