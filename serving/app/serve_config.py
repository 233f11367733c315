"""The plan written out as the declarative Serve config: what the gateway deploys, what
``serve deploy`` takes and what KubeRay's ``serveConfigV2`` holds, from one function."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serving.app.autoscaling import RUNTIME_ENV_VARS
from serving.app.builder import AppArgs, SourceSpec
from serving.app.plan import plan_application
from serving.dataplane.routing import Route
from serving.settings import ServingSettings

APP_BUILDER = "serving.app.builder:app_builder"


def serve_config(
    settings: ServingSettings,
    source: SourceSpec,
    versions: Mapping[str, str | None],
    challengers: Mapping[str, str] | None = None,
    routes: Mapping[str, Route] | None = None,
) -> dict[str, Any]:
    """The Serve config for these champions, challengers and routes."""
    args = AppArgs(serving=settings, source=source)
    plan = plan_application(settings, versions, challengers, routes)
    deployments = [
        {"name": d.name, **d.options, "user_config": d.user_config} for d in plan.deployments()
    ]
    return {
        "http_options": {"host": settings.host, "port": settings.port},
        "proxy_location": settings.proxy_location,
        "applications": [
            {
                "name": settings.app_name,
                "route_prefix": "/",
                "import_path": APP_BUILDER,
                "runtime_env": {"env_vars": RUNTIME_ENV_VARS},
                "logging_config": {"enable_access_log": settings.access_log},
                "args": args.model_dump(mode="json"),
                "deployments": deployments,
            }
        ],
    }
