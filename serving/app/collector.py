"""The one place measurements from every replica meet: rollout windows and game-time counts."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import ray

from serving.dataplane.game_time import FamilyCounts, GameTimeCounters
from serving.dataplane.rollout_metrics import FamilyWindow, MetricsWindows, RolloutWindow

logger = logging.getLogger(__name__)

COLLECTOR_NAME = "gameserve-rollout-metrics"
NAMESPACE = "gameserve"
FLUSH_INTERVAL_S = 0.25
HEAD_NODE_RESOURCE = "node:__internal_head__"


class _Collector:
    def __init__(self) -> None:
        self.windows = MetricsWindows()
        self.game_time = GameTimeCounters()

    def merge(self, windows: dict[str, FamilyWindow]) -> None:
        self.windows.merge(windows)

    def merge_game_time(self, counts: dict[str, FamilyCounts]) -> None:
        self.game_time.merge(counts)

    def game_time_totals(self) -> dict[str, FamilyCounts]:
        """Every replica's counts since the collector started, by family."""
        return self.game_time.families

    def read(self, family: str, reset: bool) -> RolloutWindow:
        summary = self.windows.family(family).summary()
        if reset:
            self.windows.families.pop(family, None)
        return summary


def collector() -> Any:
    """The cluster's collector actor, created by whoever asks first."""
    # Pinned to the head node: a detached actor on an elastic GPU worker would
    # keep that node busy, and the autoscaler would never give it back.
    actor_class = cast(
        Any, ray.remote(num_cpus=0, resources={HEAD_NODE_RESOURCE: 0.001})(_Collector)
    )
    return actor_class.options(
        name=COLLECTOR_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()


async def flush_forever(
    windows: MetricsWindows | None = None, game_time: GameTimeCounters | None = None
) -> None:
    """Ship what a replica measured to the collector, a few times a second."""
    target = collector()
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_S)
        drained = windows.drain() if windows is not None else {}
        counts = game_time.drain() if game_time is not None else {}
        try:
            if drained:
                await target.merge.remote(drained)
        except Exception as exc:  # a window's samples may be lost; requests never are
            logger.warning("could not flush rollout metrics: %s", exc)
        try:
            if counts:
                await target.merge_game_time.remote(counts)
        except Exception as exc:  # counts are kept for the next flush: totals stay whole
            logger.warning("could not flush game-time counts: %s", exc)
            if game_time is not None:
                game_time.merge(counts)


async def game_time_totals() -> dict[str, FamilyCounts]:
    totals: dict[str, FamilyCounts] = await collector().game_time_totals.remote()
    return totals
