"""The Ray Serve application graph: the ingress, and a deployment per family not served in it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models import FAMILIES
from serving.app.ingress import CHALLENGER_SUFFIX, INGRESS_NAME, Ingress, IngressConfig
from serving.app.replica import FamilyModel, ReplicaConfig
from serving.dataplane.model_source import ModelSource
from serving.settings import ServingSettings


def challenger_scale(replicas: int) -> dict[str, int]:
    """Pinned at ``replicas`` during a rollout; at most one, idle, otherwise."""
    return {
        "min_replicas": replicas,
        "max_replicas": max(replicas, 1),
        "initial_replicas": replicas,
    }


def build_application(
    settings: ServingSettings, versions: Mapping[str, str | None], source: ModelSource
) -> Any:
    """The Ray Serve application: the ingress, and a deployment per family not in it."""
    models: dict[str, Any] = {}
    challengers: dict[str, Any] = {}
    champions: dict[str, str | None] = {}
    # Families declared by spec files travel with the app: each replica registers them.
    specs = [spec.model_dump() for spec in settings.family_specs]
    for name in FAMILIES:
        family = settings.family(name)
        if family.colocated:
            champions[name] = versions.get(name)
            continue
        config = ReplicaConfig(
            version=versions.get(name),
            max_batch_rows=family.max_batch_rows,
            batch_wait_timeout_s=family.batch_wait_timeout_s,
        )
        common: dict[str, Any] = {
            "max_ongoing_requests": family.max_ongoing_requests,
            "max_queued_requests": family.max_queued_requests,
            "ray_actor_options": {"num_cpus": family.num_cpus, "num_gpus": family.num_gpus},
            "user_config": config.model_dump(),
        }
        models[name] = FamilyModel.options(name=name, **family.replicas_config(), **common).bind(
            name, source, family.intra_op_threads, specs
        )
        # Always declared, scaled to zero between rollouts: adding a deployment
        # later would change the app's code version and restart everything.
        challengers[name] = FamilyModel.options(
            name=name + CHALLENGER_SUFFIX, autoscaling_config=challenger_scale(0), **common
        ).bind(name, source, family.intra_op_threads, specs)
    return Ingress.options(
        name=INGRESS_NAME,
        **settings.ingress_replicas_config(),
        max_ongoing_requests=max(settings.family(name).max_ongoing_requests for name in FAMILIES),
        ray_actor_options={"num_cpus": settings.ingress_num_cpus},
        user_config=IngressConfig(champions=champions).model_dump(),
    ).bind(settings.model_dump(), models, challengers, source)
