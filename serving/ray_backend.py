"""A data-plane backend that calls a family deployment through its Ray handle."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from models.errors import GameserveError, OverloadedError
from serving.data_plane import ModelStatus, Prediction


def _our_error(exc: BaseException) -> GameserveError | None:
    """The GameserveError a Ray error wraps, if any (Ray wraps replica errors)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, GameserveError) and type(seen).__module__ == "models.errors":
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    return None


class RayBackend:
    def __init__(
        self, family: str, handle: DeploymentHandle[Any], app_name: str, retry_after_s: float
    ) -> None:
        self.family = family
        self.handle = handle
        self.app_name = app_name
        self.retry_after_s = retry_after_s

    async def predict(self, inputs: dict[str, np.ndarray]) -> Prediction:
        try:
            prediction: Prediction = await self.handle.predict.remote(inputs)
        except BackPressureError as exc:
            raise OverloadedError(
                f"model {self.family!r} is at capacity; retry shortly", self.retry_after_s
            ) from exc
        except Exception as exc:
            ours = _our_error(exc)
            if ours is None:
                raise
            raise ours from None
        return prediction

    async def status(self) -> ModelStatus:
        stats: dict[str, Any] = await self.handle.stats.remote()
        return ModelStatus(
            family=self.family,
            version=stats["version"],
            ready=stats["version"] is not None,
            replicas=running_replicas(self.app_name, self.family),
            device=stats["device"],
        )

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.handle.stats.remote()
        return result


def running_replicas(app_name: str, deployment: str) -> int:
    """Replicas of ``deployment`` that Serve reports RUNNING."""
    app = serve.status().applications.get(app_name)
    if app is None or deployment not in app.deployments:
        return 0
    states = app.deployments[deployment].replica_states
    return sum(count for state, count in states.items() if str(state).endswith("RUNNING"))
