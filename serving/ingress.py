"""The HTTP ingress deployment: the FastAPI app over Ray-backed families."""

from __future__ import annotations

from typing import Any, cast

from ray import serve
from ray.serve import Deployment
from ray.serve.handle import DeploymentHandle

from serving.app import create_app
from serving.data_plane import DataPlane
from serving.ray_backend import RayBackend
from serving.settings import ServingSettings


class IngressReplica:
    """Builds the app after construction, from the handles Serve passes in."""

    def __init__(self, settings: dict[str, Any], models: dict[str, DeploymentHandle[Any]]) -> None:
        serving = ServingSettings.model_validate(settings)
        backends = {
            name: RayBackend(name, handle, serving.app_name, serving.retry_after_s)
            for name, handle in models.items()
        }
        self.plane = DataPlane(backends, serving.max_rows_per_request)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.plane)


# Ray's overloads type a decorated class as the decorator factory; it is a Deployment.
Ingress = cast(Deployment, serve.deployment(serve.ingress()(IngressReplica)))
