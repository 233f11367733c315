"""The narrow interface through which ``pipelines`` drives serving.

Pipelines decide which version each family serves; the gateway writes that
into a declarative Ray Serve config (the same document KubeRay's
``serveConfigV2`` holds) and applies it through Serve's REST API. A version
change alters only one deployment's ``user_config``, which Serve applies to the
running replicas in place: nothing restarts, no in-flight request is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import ray
from ray import serve
from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

from models import FAMILIES, get_family
from models.errors import GameserveError
from models.runtime import open_verified
from serving.app.autoscaling import Capacity
from serving.app.builder import SourceSpec
from serving.app.collector import collector
from serving.app.config import CHALLENGER_SUFFIX, INGRESS_NAME, IngressConfig, ReplicaConfig
from serving.app.serve_config import serve_config
from serving.dataplane.rollout_metrics import RolloutWindow
from serving.dataplane.routing import Route
from serving.dataplane.telemetry import RolloutGauges
from serving.settings import ServingSettings, host_port

logger = logging.getLogger(__name__)


def ray_capacity() -> Capacity:
    """The CPUs and GPUs of the connected Ray cluster, as it is now."""
    resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return Capacity(cpus=max(resources.get("CPU", 1.0), 1.0), gpus=resources.get("GPU", 0.0))


class ServeGateway:
    """Deploys the application and moves families between versions."""

    def __init__(
        self, settings: ServingSettings, source: SourceSpec, dashboard_address: str
    ) -> None:
        if settings.capacity is None:
            # Policies left to "fit the machine" fit the cluster this gateway deploys to.
            settings = settings.model_copy(update={"capacity": ray_capacity()})
        self.settings = settings
        self.source = source
        self._local_source = source.create()
        self._client = ServeSubmissionClient(dashboard_address)
        self._versions: dict[str, str | None] = {}
        self._challengers: dict[str, str] = {}
        self._routes: dict[str, Route] = {}
        # Each family's rollout loop calls in from its own thread; every change
        # redeploys the whole application from this state, so changes take turns.
        self._lock = threading.RLock()

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def grpc_address(self) -> str | None:
        """``host:port`` of OIP v2 over gRPC; None when it is off."""
        port = self.settings.grpc.port
        return None if port is None else host_port(self.settings.host, port)

    @property
    def versions(self) -> dict[str, str | None]:
        return dict(self._versions)

    @property
    def challengers(self) -> dict[str, str]:
        return dict(self._challengers)

    def traffic(self, family: str) -> tuple[str, int] | None:
        """``(salt, step)`` of the split ``family``'s traffic has now; None without one.

        A controller that comes back reads it to tell a step whose traffic (and
        window) still runs from one that a restart of serving took away.
        """
        route = self._routes.get(family)
        return None if route is None else (route.salt, route.step)

    def config(self) -> dict[str, Any]:
        """The declarative Serve config of the current state: the plan, written out."""
        return serve_config(
            self.settings, self.source, self._versions, self._challengers, self._routes
        )

    def adopt(self) -> bool:
        """Take over the application a stack that died left serving: its champions,
        challengers and traffic splits become this gateway's, so the first deploy
        changes nothing that was not meant to change. False if none is running."""
        with self._lock:
            details = self._client.get_serve_details().get("applications", {})
            app = (details.get(self.settings.app_name) or {}).get("deployed_app_config")
            if not app:
                return False
            versions, challengers, routes = adopted_state(app["deployments"])
            self._versions.update(versions)
            self._challengers.update(challengers)
            self._routes.update(routes)
        logger.info("adopted the running application: %s, challengers %s", versions, challengers)
        return True

    def deploy(self, versions: Mapping[str, str | None], timeout_s: float = 180.0) -> None:
        """Serve ``versions`` as champions; returns once every replica serves them."""
        with self._lock:
            target = {name: versions.get(name) for name in FAMILIES}
            self._check_fetchable(target, self._versions)
            previous, self._versions = self._versions, target
            try:
                self._apply(timeout_s)
            except BaseException:
                self._versions = previous
                raise
        logger.info("serving %s at %s", target, self.url)

    def set_version(self, family: str, version: str) -> None:
        """Move one family to ``version`` in place, without dropping requests."""
        with self._lock:
            self.deploy({**self._versions, family: version})

    def start_challenger(self, family: str, version: str) -> None:
        """Run ``version`` beside the champion, with no traffic yet."""
        with self._lock:
            self._check_fetchable({family: version}, self._challengers)
            self._challengers[family] = version
            self._routes.pop(family, None)
            self._apply()

    def set_traffic(
        self,
        family: str,
        weight: float,
        shadow: float,
        salt: str,
        step: int = 0,
        step_name: str = "",
    ) -> None:
        """Send ``weight`` of ``family``'s traffic to its challenger, mirror ``shadow``.

        ``step`` and ``step_name`` say where the rollout stands, for its metrics.
        """
        with self._lock:
            version = self._challengers[family]
            self._routes[family] = Route(
                challenger_version=version, weight=weight, shadow=shadow, salt=salt, step=step
            )
            self._apply()
            gauges = RolloutGauges(version, step, step_name, weight, shadow)
            collector().set_rollout.remote(family, gauges)

    def stop_challenger(self, family: str, promote: bool) -> None:
        """End a rollout: promote the challenger in place, or drop it; it then drains."""
        with self._lock:
            version = self._challengers.get(family)
            if promote and version is not None:
                # The champion replicas swap first, so the cohort on the challenger
                # moves to the same version before the challenger replicas drain.
                self.set_version(family, version)
            self._routes.pop(family, None)
            self._challengers.pop(family, None)
            self._apply()
            collector().set_rollout.remote(family, None)

    def rollout_metrics(self, family: str, reset: bool = False) -> RolloutWindow:
        """Champion and challenger figures since the last reset, from every ingress."""
        window: RolloutWindow = ray.get(collector().read.remote(family, reset))
        return window

    def replica_stats(self, deployment: str) -> dict[str, Any]:
        """Counters of one replica serving ``deployment`` (a family, or its challenger)."""
        app = self.settings.app_name
        family = self.settings.family(deployment.removesuffix(CHALLENGER_SUFFIX))
        if family.colocated:
            ingress = serve.get_deployment_handle(INGRESS_NAME, app_name=app)
            stats: dict[str, Any] = ingress.stats.remote(deployment).result()
        else:
            handle = serve.get_deployment_handle(deployment, app_name=app)
            stats = handle.stats.remote().result()
        return stats

    def stop(self) -> None:
        serve.delete(self.settings.app_name)

    def _check_fetchable(
        self, target: Mapping[str, str | None], current: Mapping[str, str | None]
    ) -> None:
        for name, version in target.items():
            if version is not None and version != current.get(name):
                # Refused here, a version that cannot be fetched or run never reaches
                # a replica (where a failed load would cost a replica or a retry loop).
                family = get_family(name)
                open_verified(
                    self._local_source.fetch(name, version), family.contract,
                    family.example_inputs(rows=2), label=f"{name} v{version}", prefer_gpu=False,
                )  # fmt: skip

    def _apply(self, timeout_s: float = 180.0) -> None:
        before = self._last_deployed()
        self._client.deploy_applications(self.config())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            app = serve.status().applications.get(self.settings.app_name)
            if app is not None and app.last_deployed_time_s > before:
                if str(app.status).endswith("DEPLOY_FAILED"):
                    raise GameserveError(
                        f"deploying {self.settings.app_name} failed: {app.message}"
                    )
                healthy = all(str(d.status).endswith("HEALTHY") for d in app.deployments.values())
                if str(app.status).endswith("RUNNING") and healthy and self._serves_target():
                    return
            time.sleep(0.1)
        raise GameserveError(f"{self.settings.app_name} not converged in {timeout_s:.0f}s")

    def _last_deployed(self) -> float:
        app = serve.status().applications.get(self.settings.app_name)
        return app.last_deployed_time_s if app else 0.0

    def _serves_target(self) -> bool:
        wanted = {name: v for name, v in self._versions.items() if v is not None}
        wanted.update({n + CHALLENGER_SUFFIX: v for n, v in self._challengers.items()})
        return all(self.replica_stats(name)["version"] == v for name, v in wanted.items())


def adopted_state(
    deployments: list[dict[str, Any]],
) -> tuple[dict[str, str | None], dict[str, str], dict[str, Route]]:
    """Champions, challengers and routes, read back from a deployed application's config."""
    versions: dict[str, str | None] = {}
    challengers: dict[str, str] = {}
    routes: dict[str, Route] = {}
    for deployment in deployments:
        name, user_config = deployment["name"], deployment.get("user_config") or {}
        if name == INGRESS_NAME:
            ingress = IngressConfig.model_validate(user_config)
            versions.update(ingress.champions)
            challengers.update(ingress.challengers)
            routes.update(ingress.routes)
        elif name.endswith(CHALLENGER_SUFFIX):
            version = ReplicaConfig.model_validate(user_config).version
            if version is not None:
                challengers[name.removesuffix(CHALLENGER_SUFFIX)] = version
        else:
            versions[name] = ReplicaConfig.model_validate(user_config).version
    return versions, challengers, routes
