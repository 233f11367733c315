"""What every benchmark needs first: the three models on disk and a local Ray."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import ray
from ray import serve

from models import FAMILIES, trainable_family
from models.training import TrainSettings
from serving.dataplane.model_source import DirectoryModelSource
from serving.runtime.haproxy_edge import EdgePlan
from serving.runtime.ports import free_port
from serving.runtime.substrate import ServeRuntime


def train_models(root: Path) -> DirectoryModelSource:
    """Version "1" of every family, trained as the stack would on first start."""
    source = DirectoryModelSource(root)
    for name in FAMILIES:
        trained = trainable_family(name).train(TrainSettings(train_samples=20_000, epochs=3))
        source.add(name, "1", trained.export())
    return source


@contextlib.contextmanager
def local_ray(
    runtime: ServeRuntime, num_cpus: int | None = None, edge: EdgePlan | None = None
) -> Iterator[str]:
    """A local Ray on this substrate; yields the dashboard URL (Serve's deploy API).
    ``edge``: the game-time rules HAProxy applies (``haproxy_edge.plan_for``)."""
    with runtime.applied(edge=edge):
        context = ray.init(
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=free_port(),
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    try:
        yield f"http://{context.dashboard_url}"
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
