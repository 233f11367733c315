"""The one place rollout measurements from every ingress replica meet."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import ray

from serving.dataplane.rollout_metrics import FamilyWindow, MetricsWindows, RolloutWindow

logger = logging.getLogger(__name__)

COLLECTOR_NAME = "gameserve-rollout-metrics"
NAMESPACE = "gameserve"
FLUSH_INTERVAL_S = 0.25
HEAD_NODE_RESOURCE = "node:__internal_head__"


class _Collector:
    def __init__(self) -> None:
        self.windows = MetricsWindows()

    def merge(self, windows: dict[str, FamilyWindow]) -> None:
        self.windows.merge(windows)

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


async def flush_forever(windows: MetricsWindows) -> None:
    """Ship what an ingress replica measured to the collector, a few times a second."""
    target = collector()
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_S)
        drained = windows.drain()
        if drained:
            try:
                await target.merge.remote(drained)
            except Exception as exc:  # measurements may be lost; requests never are
                logger.warning("could not flush rollout metrics: %s", exc)
