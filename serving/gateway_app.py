"""The Ray Serve application graph: one deployment per family behind one ingress."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models import FAMILIES
from serving.ingress import Ingress
from serving.model_source import ModelSource
from serving.replica import FamilyModel, ReplicaConfig
from serving.settings import ServingSettings


def build_application(
    settings: ServingSettings, versions: Mapping[str, str | None], source: ModelSource
) -> Any:
    """The Ray Serve application: one deployment per family behind one ingress."""
    models = {}
    for name in FAMILIES:
        family = settings.family(name)
        config = ReplicaConfig(
            version=versions.get(name),
            max_batch_rows=family.max_batch_rows,
            batch_wait_timeout_s=family.batch_wait_timeout_s,
        )
        models[name] = FamilyModel.options(
            name=name,
            num_replicas=family.num_replicas,
            max_ongoing_requests=family.max_ongoing_requests,
            max_queued_requests=family.max_queued_requests,
            ray_actor_options={"num_cpus": family.num_cpus, "num_gpus": family.num_gpus},
            user_config=config.model_dump(),
        ).bind(name, source, family.intra_op_threads)
    return Ingress.options(
        name="ingress",
        num_replicas=settings.ingress_replicas,
        max_ongoing_requests=max(f.max_ongoing_requests for f in settings.families.values()),
        ray_actor_options={"num_cpus": settings.ingress_num_cpus},
    ).bind(settings.model_dump(), models)
