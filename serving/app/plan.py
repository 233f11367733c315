"""The application described once, as data: which deployments, with what options and state.

A plan is computed from the serving settings and the current versions, rollout
challengers and routes, and imports no Ray. Two renderers read it: the graph
(``serving/app/graph.py``) binds Ray Serve deployments from it when Serve
builds the application, and the gateway (``serving/app/gateway.py``) writes
it out as the declarative Serve config it deploys (the same shape
``serve deploy`` and KubeRay's ``serveConfigV2`` take).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from models import FAMILIES
from serving.app.config import (
    CHALLENGER_SUFFIX,
    INGRESS_NAME,
    ForecastTerms,
    IngressConfig,
    ReplicaConfig,
)
from serving.dataplane.routing import Route
from serving.settings import MARKET_LABEL, ServingSettings


@dataclass(frozen=True)
class DeploymentPlan:
    """One deployment: its name, its Serve options, and the state replicas apply in place."""

    name: str
    family: str | None  # None: the ingress
    options: dict[str, Any]  # num_replicas or autoscaling_config, queue bounds, resources
    user_config: dict[str, Any]
    # Options only the graph sets (Serve takes them from the code, not the config).
    code_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AppPlan:
    ingress: DeploymentPlan
    families: tuple[
        DeploymentPlan, ...
    ]  # champion and challenger of each family not in the ingress

    def deployments(self) -> tuple[DeploymentPlan, ...]:
        return (*self.families, self.ingress)


def challenger_scale(replicas: int) -> dict[str, int]:
    """Pinned at ``replicas`` during a rollout; at most one, idle, otherwise."""
    return {
        "min_replicas": replicas,
        "max_replicas": max(replicas, 1),
        "initial_replicas": replicas,
    }


def plan_application(
    settings: ServingSettings,
    versions: Mapping[str, str | None],
    challengers: Mapping[str, str] | None = None,
    routes: Mapping[str, Route] | None = None,
) -> AppPlan:
    """Every deployment of the application for these champions, challengers and routes."""
    challengers = challengers or {}
    ingress = IngressConfig(routes=dict(routes or {}))
    families: list[DeploymentPlan] = []
    capacity = settings.cluster_capacity()
    for name in FAMILIES:
        family = settings.family(name)
        challenger = challengers.get(name)
        if family.colocated:
            ingress.champions[name] = versions.get(name)
            if challenger is not None:
                ingress.challengers[name] = challenger
            continue
        code = {
            "max_ongoing_requests": family.max_ongoing_requests,
            "max_queued_requests": family.max_queued_requests,
            "graceful_shutdown_timeout_s": family.shutdown_grace_s,
            "ray_actor_options": {
                "num_cpus": family.num_cpus,
                "num_gpus": family.num_gpus,
                **({"resources": family.resources} if family.resources else {}),
                # A reclaim at 30 s notice is a risk only a family that can afford it takes.
                **({} if family.spot else {"label_selector": {MARKET_LABEL: "!spot"}}),
            },
        }
        policy = family.fitted_policy(capacity)
        forecast = (
            ForecastTerms(
                settings=policy.forecast,
                min_replicas=policy.min_replicas,
                max_replicas=policy.ceiling,
            )
            if policy is not None and policy.forecast is not None
            else None
        )
        # The challenger deployment is always declared, scaled to zero between
        # rollouts: adding one later would change the app's code and restart it all.
        for suffix, version, scale in (
            ("", versions.get(name), family.replicas_config(capacity)),
            (
                CHALLENGER_SUFFIX,
                challenger,
                {
                    "autoscaling_config": challenger_scale(
                        family.baseline_replicas if challenger else 0
                    )
                },
            ),
        ):
            config = ReplicaConfig(
                version=version,
                max_batch_rows=family.max_batch_rows,
                batch_wait_timeout_s=family.batch_wait_timeout_s,
                forecast=forecast if not suffix else None,
            )
            families.append(DeploymentPlan(name + suffix, name, scale, config.model_dump(), code))
    max_ongoing = max(settings.family(name).max_ongoing_requests for name in FAMILIES)
    return AppPlan(
        ingress=DeploymentPlan(
            INGRESS_NAME,
            None,
            settings.ingress_replicas_config(),
            ingress.model_dump(),
            {
                "max_ongoing_requests": max_ongoing,
                "ray_actor_options": {"num_cpus": settings.ingress_num_cpus},
            },
        ),
        families=tuple(families),
    )
