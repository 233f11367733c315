"""``gameserve build-config``: the application as ``serve deploy`` and KubeRay take it.

One source renders all three: the app plan (``serving/app/plan.py``) written out by
``serving.app.serve_config`` is what the local gateway deploys, what this module
prints as a Serve config, and what it embeds as a RayService's ``serveConfigV2``.
On a cluster, replicas read the MLflow address from a ConfigMap (an environment
variable of their pod) and the signing key, MLflow login and API keys from a
Secret mounted read-only.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from importlib.metadata import version as package_version
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel, Field

from models.errors import InvalidInputError
from pipelines.registry_source import registry_source_spec
from pipelines.settings import Settings
from serving.app.autoscaling import Capacity
from serving.app.serve_config import serve_config
from serving.runtime.haproxy_edge import plan_for
from serving.runtime.haproxy_listeners import (
    HOST_VARIABLE,
)
from serving.runtime.substrate import HAPROXY_WRAPPER
from serving.settings import MARKET_LABEL, Market
from serving.upstream import RAY_HAPROXY_BINARY_VARIABLE

TRACKING_ENV = "GAMESERVE_TRACKING__URI"
ROLE_LABEL = "gameserve.io/role"


class NodeGroup(BaseModel):
    """A worker group of GPU nodes bought one way: on demand, or spot (reclaimable)."""

    name: str
    market: Market
    min_workers: int = Field(default=0, ge=0)
    max_workers: int = Field(ge=0)
    cpus: int = Field(default=4, ge=1)
    memory: str = "16Gi"
    gpus: int = Field(default=1, ge=1)
    grace_s: int = Field(
        ge=10,
        description="The pod's terminationGracePeriodSeconds: how long a reclaimed or "
        "scaled-in node has between SIGTERM and SIGKILL. Its preStop drains it first.",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Kubernetes nodes this group's pods go to (the cloud's spot label, "
        "e.g. cloud.google.com/gke-spot: 'true').",
    )
    tolerations: list[dict[str, Any]] = Field(default_factory=list)


def default_groups() -> list[NodeGroup]:
    # GKE gives a reclaimed spot VM 30 s; AWS warns 2 min ahead, which KubeRay does
    # not see: 30 s is what a spot pod can count on.
    return [
        NodeGroup(name="gpu-on-demand", market="on_demand", max_workers=2, grace_s=120),
        NodeGroup(name="gpu-spot", market="spot", max_workers=4, grace_s=30),
    ]


class KubeRaySettings(BaseModel):
    """The cluster a RayService asks KubeRay for."""

    name: str = "gameserve"
    image: str = Field(default="gameserve:latest", description="gameserve installed, Ray 2.60")
    secret: str = Field(
        default="gameserve",
        description="Holds signing.key, mlflow-credentials.json and keys.json (API keys).",
    )
    config_map: str = Field(default="gameserve", description="Holds tracking_uri.")
    secrets_dir: str = "/etc/gameserve"
    head_cpus: int = Field(default=4, ge=1)
    head_memory: str = "16Gi"
    head_grace_s: int = Field(
        default=60, ge=10, description="The head's (ingress, HAProxy) termination grace."
    )
    gpu_groups: list[NodeGroup] = Field(default_factory=default_groups)
    haproxy_wrapper: str = Field(
        default=HAPROXY_WRAPPER, description="The hardened HAProxy launcher, on the image's PATH."
    )

    def capacity(self) -> Capacity:
        """The cluster at its largest: what policies without max_replicas may fill."""
        groups = self.gpu_groups
        return Capacity(
            cpus=self.head_cpus + sum(g.cpus * g.max_workers for g in groups),
            gpus=sum(g.gpus * g.max_workers for g in groups),
        )


def ray_env(settings: Settings, kuberay: KubeRaySettings) -> dict[str, str]:
    """What Ray's processes read at start, as the local stack sets it (serving.runtime):
    Serve's HAProxy path and its hardening, with the image's paths and fixed ports."""
    serving = settings.serving
    edge = plan_for(serving)
    env = serving.runtime.env_vars(serving.limits.max_body_bytes, serving.app_name, edge)
    if "RAY_SERVE_ENABLE_HA_PROXY" in env:
        env.update(RAY_SERVE_HAPROXY_STATS_PORT="8404", RAY_SERVE_HAPROXY_METRICS_PORT="9101")
        env[RAY_HAPROXY_BINARY_VARIABLE] = kuberay.haproxy_wrapper
        # Whether or not the wrapper is installed where this renders.
        env.update(
            serving.runtime.wrapper_env(serving.limits.max_body_bytes, serving.app_name, edge)
        )
        env[HOST_VARIABLE] = serving.runtime.listener_host
    return env


def ray_start_env(settings: Settings) -> str:
    """``export`` lines for ``eval`` before ``ray start`` on a VM (ray-cluster.yaml): what
    the RayService sets, the wrapper beside this Python, and Ray's token on."""
    wrapper = Path(sys.executable).with_name(HAPROXY_WRAPPER)
    env = ray_env(settings, KubeRaySettings(haproxy_wrapper=str(wrapper)))
    env["RAY_AUTH_MODE"] = "token"
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items()))


def cluster_serve_config(
    settings: Settings, versions: Mapping[str, str | None], kuberay: KubeRaySettings
) -> dict[str, Any]:
    """The Serve config for a cluster: every pod's paths, the address from the environment."""
    secrets = PurePosixPath(kuberay.secrets_dir)
    serving = settings.serving.model_copy(
        update={
            # The Serve proxy answers the pod's Service; the guard's keys stay required.
            "host": "0.0.0.0",
            "capacity": settings.serving.capacity or kuberay.capacity(),
            "auth": settings.serving.auth.model_copy(
                update={"mode": "on", "keys_file": Path(secrets / "keys.json")}
            ),
            # Where a payload log is kept, its routing-key hashes are salted as locally.
            "payload_log": settings.serving.payload_log.model_copy(
                update={"salt_file": Path(secrets / "signing.key")}
            ),
        }
    )
    source = registry_source_spec(
        settings.tracking.uri or "",
        settings.tracking,
        Path("/tmp/gameserve-model-cache"),
        Path(secrets / "signing.key"),
        Path(secrets / "mlflow-credentials.json"),
    )
    source.arguments["tracking_uri_env"] = TRACKING_ENV
    return serve_config(serving, source, versions)


def rayservice(
    serve: dict[str, Any], kuberay: KubeRaySettings, env: dict[str, str]
) -> dict[str, Any]:
    """A KubeRay ``RayService`` running ``serve``: an on-demand CPU head (the ingress), and
    autoscaled GPU worker groups, on demand and spot; ``env`` for every Ray process."""
    head = _pod(
        "ray-head", env, kuberay, kuberay.head_cpus, kuberay.head_memory, gpus=0,
        ports={"gcs": 6379, "dashboard": 8265, "serve": 8000, "grpc": 8001},
    )  # fmt: skip
    head["metadata"] = {"labels": {ROLE_LABEL: "ingress"}}
    head["spec"]["terminationGracePeriodSeconds"] = kuberay.head_grace_s
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": kuberay.name, "labels": {"app.kubernetes.io/name": "gameserve"}},
        "spec": {
            "serveConfigV2": to_yaml(serve),
            "rayClusterConfig": {
                "rayVersion": package_version("ray"),
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {"idleTimeoutSeconds": 300, "upscalingMode": "Default"},
                "headGroupSpec": {
                    # The head takes no replicas' GPUs, and KubeRay reaches its dashboard.
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-gpus": "0"},
                    "labels": {MARKET_LABEL: "on_demand"},
                    "template": head,
                },
                "workerGroupSpecs": [_group(group, kuberay, env) for group in kuberay.gpu_groups],
            },
        },
    }


def _group(group: NodeGroup, kuberay: KubeRaySettings, env: dict[str, str]) -> dict[str, Any]:
    """One worker group: Ray's node label says its market, which families select on."""
    pod = _pod("ray-worker", env, kuberay, group.cpus, group.memory, gpus=group.gpus, ports={})
    pod["spec"]["terminationGracePeriodSeconds"] = group.grace_s
    if group.node_selector:
        pod["spec"]["nodeSelector"] = dict(group.node_selector)
    if group.tolerations:
        pod["spec"]["tolerations"] = list(group.tolerations)
    # On SIGTERM (a spot reclaim, a scale-in, a node drain) Kubernetes runs preStop
    # first: the node tells Ray it is going, Serve starts its replicas elsewhere and
    # stops these gracefully (in-flight calls finish), and no new work is routed here.
    drain = (
        "ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION "
        f"--reason-message 'pod terminating' --deadline-remaining-seconds {group.grace_s}"
        f" && sleep {max(group.grace_s - 5, 1)}"
    )
    pod["spec"]["containers"][0]["lifecycle"] = {
        "preStop": {"exec": {"command": ["/bin/sh", "-c", drain]}}
    }
    return {
        "groupName": group.name,
        "replicas": group.min_workers,
        "minReplicas": group.min_workers,
        "maxReplicas": group.max_workers,
        "labels": {MARKET_LABEL: group.market},
        "rayStartParams": {},
        "template": pod,
    }


def ingress_disruption_budget(kuberay: KubeRaySettings) -> dict[str, Any]:
    """No voluntary eviction of the head (the ingress and Ray's GCS) while it is the
    only one: a node drain waits for an operator instead of dropping every request."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{kuberay.name}-ingress"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {ROLE_LABEL: "ingress"}}},
    }


def _pod(
    name: str,
    ray: dict[str, str],
    kuberay: KubeRaySettings,
    cpus: int,
    memory: str,
    gpus: int,
    ports: dict[str, int],
) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": str(cpus), "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(ray.items())]
    env.append(
        {
            "name": TRACKING_ENV,
            "valueFrom": {"configMapKeyRef": {"name": kuberay.config_map, "key": "tracking_uri"}},
        }
    )
    container: dict[str, Any] = {
        "name": name,
        "image": kuberay.image,
        "resources": {"limits": limits, "requests": dict(limits)},
        "env": env,
        "volumeMounts": [
            {"name": "gameserve-secrets", "mountPath": kuberay.secrets_dir, "readOnly": True}
        ],
    }
    if ports:
        container["ports"] = [{"name": n, "containerPort": p} for n, p in ports.items()]
    return {
        "spec": {
            "containers": [container],
            "volumes": [
                {
                    "name": "gameserve-secrets",
                    "secret": {"secretName": kuberay.secret, "defaultMode": 0o400},
                }
            ],
        }
    }


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]  # PyYAML ships no types
    """Multi-line strings (the embedded Serve config) as readable ``|`` blocks."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def to_yaml(document: dict[str, Any]) -> str:
    return str(yaml.dump(document, Dumper=_Dumper, sort_keys=False))


def registry_champions(settings: Settings, families: list[str]) -> dict[str, str | None]:
    """Each family's champion in the registry the settings (or the stack here) name."""
    from pipelines.registry import CHAMPION, connect_to_stack

    registry = connect_to_stack(settings)
    return {family: registry.aliases(family).get(CHAMPION) for family in families}


def parse_versions(pairs: list[str], families: list[str]) -> dict[str, str]:
    """``["npc-behavior=3"]`` → ``{"npc-behavior": "3"}``, or a GameserveError naming the flag."""
    versions = {}
    for pair in pairs:
        family, _, version = pair.partition("=")
        if family not in families or not version:
            raise InvalidInputError(
                f"--version: {pair!r} is not FAMILY=VERSION, FAMILY one of {', '.join(families)}"
            )
        versions[family] = version
    return versions


def write_or_print(
    serve: dict[str, Any],
    manifest: dict[str, Any],
    kuberay: bool,
    out: Path | None,
    kuberay_settings: KubeRaySettings | None = None,
) -> str:
    """Every document into ``out``, or the one asked for (the RayService with its
    PodDisruptionBudget, as one YAML stream), as text to print."""
    kuberay_settings = kuberay_settings or KubeRaySettings()
    if out is None:
        if not kuberay:
            return to_yaml(serve)
        return to_yaml(manifest) + "---\n" + to_yaml(ingress_disruption_budget(kuberay_settings))
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve-config.yaml").write_text(to_yaml(serve))
    (out / "rayservice.yaml").write_text(to_yaml(manifest))
    (out / "pdb.yaml").write_text(to_yaml(ingress_disruption_budget(kuberay_settings)))
    return f"wrote serve-config.yaml, rayservice.yaml and pdb.yaml to {out}"
