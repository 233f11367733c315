"""The HTTP ingress deployment: the FastAPI app over Ray-backed families."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Deployment
from ray.serve.handle import DeploymentHandle

from serving.app import create_app
from serving.collector import flush_forever
from serving.data_plane import DataPlane
from serving.ray_backend import RayBackend
from serving.routing import Route
from serving.settings import ServingSettings

CHALLENGER_SUFFIX = "-challenger"


class IngressConfig(BaseModel):
    """The ingress ``user_config``: rollout routes, applied in place."""

    routes: dict[str, Route] = Field(default_factory=dict)


class IngressReplica:
    """Builds the app after construction, from the handles Serve passes in."""

    def __init__(
        self,
        settings: dict[str, Any],
        models: dict[str, DeploymentHandle[Any]],
        challengers: dict[str, DeploymentHandle[Any]],
    ) -> None:
        serving = ServingSettings.model_validate(settings)

        def backends(handles: dict[str, DeploymentHandle[Any]]) -> dict[str, RayBackend]:
            return {
                name: RayBackend(name, handle, serving.app_name, serving.retry_after_s)
                for name, handle in handles.items()
            }

        self.plane = DataPlane(
            backends(models), serving.max_rows_per_request, backends(challengers)
        )
        self._flusher: asyncio.Task[None] | None = None

    async def reconfigure(self, config: dict[str, Any]) -> None:
        self.plane.set_routes(IngressConfig.model_validate(config).routes)
        if self._flusher is None:
            self._flusher = asyncio.create_task(flush_forever(self.plane.metrics))

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.plane)


# Ray's overloads type a decorated class as the decorator factory; it is a Deployment.
Ingress = cast(Deployment, serve.deployment(serve.ingress()(IngressReplica)))
