"""The data plane: every route's way to a model, whatever protocol it speaks.

Routes translate HTTP; the data plane validates tensors against the family
contract, bounds the request, dispatches it (``serving.dataplane.canary`` decides which
version answers during a rollout) and checks what comes back. Backends are in
``serving.dataplane.backend``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel

from models import get_family
from models.errors import InvalidInputError, ModelNotFoundError
from models.family import AnyFamily
from serving.dataplane.backend import Backend, ModelStatus, Prediction
from serving.dataplane.batching import rows
from serving.dataplane.canary import Canary, check_outputs
from serving.dataplane.rollout_metrics import MetricsWindows
from serving.dataplane.routing import Route


class DataPlane:
    """Validation, bounds, routing and output checks shared by every route."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        max_rows_per_request: int,
        challengers: Mapping[str, Backend] | None = None,
    ) -> None:
        self.backends = dict(backends)
        self.max_rows_per_request = max_rows_per_request
        self.canary = Canary(self.backends, challengers or {})

    @property
    def metrics(self) -> MetricsWindows:
        """What each version did in the current rollout windows (flushed to the collector)."""
        return self.canary.metrics

    def family(self, name: str) -> AnyFamily:
        if name not in self.backends:
            raise ModelNotFoundError(f"model {name!r} is not served here")
        return get_family(name)

    def set_routes(self, routes: Mapping[str, Route]) -> None:
        """Replace the rollout routes; families not named go back to champion only."""
        self.canary.set_routes(routes)

    async def infer(
        self,
        name: str,
        inputs: Mapping[str, np.ndarray],
        version: str | None = None,
        field: str | None = None,
        routing_key: str | None = None,
    ) -> Prediction:
        """Run named input tensors through the family's serving model.

        ``field`` names the batch in errors; ``routing_key`` (a session or
        player id) keeps one caller on one version during a rollout.
        """
        family = self.family(name)
        tensors = family.contract.validate_inputs(inputs)
        count = rows(tensors)
        if count > self.max_rows_per_request:
            field = field or family.contract.inputs[0].name
            raise InvalidInputError(
                f"{field}: {count} entries exceed the limit of {self.max_rows_per_request} "
                "per request"
            )
        if version is None:
            return await self.canary.serve(family, tensors, routing_key)
        if version == self.canary.challenger_version(name):
            return await self.canary.explicit_challenger(family, tensors)
        return await self._explicit_champion(family, tensors, version)

    async def _explicit_champion(
        self, family: AnyFamily, tensors: dict[str, np.ndarray], version: str
    ) -> Prediction:
        """A request naming the champion's version: no routing, and no status call per request."""
        backend = self.backends[family.name]
        if backend.version is not None and backend.version != version:
            raise _not_serving(family.name, version, backend.version)
        prediction = await backend.predict(tensors)
        if prediction.version != version:  # it moved while this request waited
            raise _not_serving(family.name, version, prediction.version)
        check_outputs(family, prediction)
        return prediction

    async def infer_domain(
        self, name: str, request: BaseModel, routing_key: str | None = None
    ) -> tuple[Any, str]:
        """Run a game API request: encode, infer, decode."""
        family = self.family(name)
        route = family.game_route
        if route is None:
            raise ModelNotFoundError(f"model {name!r} has no game route")
        prediction = await self.infer(
            name, family.encode(request), field=route.batch_field, routing_key=routing_key
        )
        return family.decode(request, prediction.outputs), prediction.version

    async def status(self, name: str) -> ModelStatus:
        self.family(name)
        return await self.backends[name].status()

    async def require_version(self, name: str, version: str) -> ModelStatus:
        status = await self.status(name)
        if status.version != version:
            raise _not_serving(name, version, status.version)
        return status


def _not_serving(name: str, version: str, serving: str | None) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"model {name!r} version {version!r} is not serving (serving: {serving})"
    )
