"""The narrow interface through which ``pipelines`` drives serving.

Pipelines decide which version each family serves; the gateway writes that
into a declarative Ray Serve config (the same document KubeRay's
``serveConfigV2`` holds) and applies it through Serve's REST API. A version
change alters only one deployment's ``user_config``, which Serve applies to the
running replicas in place: nothing restarts, no in-flight request is dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from ray import serve
from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

from models import FAMILIES
from models.errors import GameserveError
from serving.application import AppArgs, SourceSpec
from serving.replica import ReplicaConfig
from serving.settings import ServingSettings

logger = logging.getLogger(__name__)

APP_BUILDER = "serving.application:app_builder"


class ServeGateway:
    """Deploys the application and moves families between versions."""

    def __init__(
        self, settings: ServingSettings, source: SourceSpec, dashboard_address: str
    ) -> None:
        self.settings = settings
        self.source = source
        self._local_source = source.create()
        self._client = ServeSubmissionClient(dashboard_address)
        self._versions: dict[str, str | None] = {}

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def versions(self) -> dict[str, str | None]:
        return dict(self._versions)

    def config(self, versions: Mapping[str, str | None]) -> dict[str, Any]:
        """The declarative Serve config that serves ``versions``."""
        args = AppArgs(serving=self.settings, source=self.source)
        deployments = []
        for name in FAMILIES:
            family = self.settings.family(name)
            user_config = ReplicaConfig(
                version=versions.get(name),
                max_batch_rows=family.max_batch_rows,
                batch_wait_timeout_s=family.batch_wait_timeout_s,
            )
            deployments.append({"name": name, "user_config": user_config.model_dump()})
        return {
            "http_options": {"host": self.settings.host, "port": self.settings.port},
            "applications": [
                {
                    "name": self.settings.app_name,
                    "route_prefix": "/",
                    "import_path": APP_BUILDER,
                    "args": args.model_dump(mode="json"),
                    "deployments": deployments,
                }
            ],
        }

    def deploy(self, versions: Mapping[str, str | None], timeout_s: float = 180.0) -> None:
        """Apply ``versions`` and return once every replica serves them."""
        target = {name: versions.get(name) for name in FAMILIES}
        for name, version in target.items():
            if version is not None and version != self._versions.get(name):
                # Refused here, a broken version never reaches a replica.
                self._local_source.fetch(name, version)
        before = self._last_deployed()
        self._client.deploy_applications(self.config(target))
        self._wait_until_serving(before, target, timeout_s)
        self._versions = target
        logger.info("serving %s at %s", target, self.url)

    def set_version(self, family: str, version: str) -> None:
        """Move one family to ``version`` in place, without dropping requests."""
        self.deploy({**self._versions, family: version})

    def replica_stats(self, family: str) -> dict[str, Any]:
        """Counters of one replica of ``family``."""
        handle = serve.get_deployment_handle(family, app_name=self.settings.app_name)
        stats: dict[str, Any] = handle.stats.remote().result()
        return stats

    def stop(self) -> None:
        serve.delete(self.settings.app_name)

    def _last_deployed(self) -> float:
        app = serve.status().applications.get(self.settings.app_name)
        return app.last_deployed_time_s if app else 0.0

    def _wait_until_serving(
        self, before: float, target: Mapping[str, str | None], timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            app = serve.status().applications.get(self.settings.app_name)
            if app is not None and app.last_deployed_time_s > before:
                if str(app.status).endswith("DEPLOY_FAILED"):
                    raise GameserveError(
                        f"deploying {self.settings.app_name} failed: {app.message}"
                    )
                healthy = all(str(d.status).endswith("HEALTHY") for d in app.deployments.values())
                if str(app.status).endswith("RUNNING") and healthy and self._serves(target):
                    return
            time.sleep(0.1)
        raise GameserveError(f"{self.settings.app_name} not serving {dict(target)} in {timeout_s}s")

    def _serves(self, target: Mapping[str, str | None]) -> bool:
        return all(
            version is None or self.replica_stats(name)["version"] == version
            for name, version in target.items()
        )
