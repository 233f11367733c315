"""The data plane: every route's way to a model, whatever protocol it speaks.

Routes translate HTTP; the data plane validates tensors against the family
contract, bounds the request, calls the family's backend and checks what
comes back. A backend is either a Ray Serve deployment (``RayBackend``) or an
in-process ONNX session (``LocalBackend``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel

from models import get_family
from models.errors import (
    GameserveError,
    InferenceError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    OverloadedError,
)
from models.family import AnyFamily
from models.runtime import OnnxModel
from serving.batching import rows
from serving.rollout_metrics import MetricsWindows, VersionWindow
from serving.routing import CHALLENGER_ROLE, Route, choose

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """Output tensors and the model version that produced them."""

    outputs: dict[str, np.ndarray]
    version: str


@dataclass(frozen=True)
class ModelStatus:
    family: str
    version: str | None
    ready: bool  # it answers: some replica has a version loaded
    replicas: int
    device: str
    # Why a replica of it is not running while Serve keeps retrying it (a
    # replacement that cannot load its model, say); None when all is well.
    problem: str | None = None


@dataclass(frozen=True)
class Replicas:
    running: int
    problem: str | None  # the platform's account of a replica it cannot keep running


class Backend(Protocol):
    """Runs one family's model; the data plane never knows how."""

    @property
    def version(self) -> str | None:
        """The version it serves as far as this process knows; from memory, never a call."""
        ...

    async def predict(self, inputs: dict[str, np.ndarray]) -> Prediction: ...

    async def status(self) -> ModelStatus: ...


class LocalBackend:
    """An ONNX Runtime session in this process: for tools, tests and notebooks.

    Without a model it stands for a family that has no champion yet.
    """

    def __init__(self, family: str, model: OnnxModel | None, version: str | None) -> None:
        self.family = family
        self.model = model
        self.version = version

    async def predict(self, inputs: dict[str, np.ndarray]) -> Prediction:
        model, version = self.model, self.version
        if model is None or version is None:
            raise ModelNotReadyError(f"model {self.family!r} has no version loaded yet")
        outputs = await asyncio.to_thread(model.run_validated, inputs)
        return Prediction(outputs, version)

    async def status(self) -> ModelStatus:
        if self.model is None:
            return ModelStatus(self.family, None, False, 0, "none")
        return ModelStatus(self.family, self.version, True, 1, self.model.device)


class DataPlane:
    """Validation, bounds, routing and output checks shared by every route."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        max_rows_per_request: int,
        challengers: Mapping[str, Backend] | None = None,
    ) -> None:
        self.backends = dict(backends)
        self.challengers = dict(challengers or {})
        self.max_rows_per_request = max_rows_per_request
        self.routes: dict[str, Route] = {}
        self.metrics = MetricsWindows()
        self._rng = random.Random()
        self._shadow_tasks: set[asyncio.Task[None]] = set()

    def family(self, name: str) -> AnyFamily:
        if name not in self.backends:
            raise ModelNotFoundError(f"model {name!r} is not served here")
        return get_family(name)

    def set_routes(self, routes: Mapping[str, Route]) -> None:
        """Replace the rollout routes; families not named go back to champion only."""
        self.routes = {n: r for n, r in routes.items() if n in self.challengers}

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
        route = self.routes.get(name)
        if version is not None:
            if route is not None and version == route.challenger_version:
                return await self._explicit_challenger(family, tensors)
            return await self._explicit_champion(family, tensors, version)
        if route is None:
            prediction = await self.backends[name].predict(tensors)
            _check_outputs(family, prediction)
            return prediction
        role, mirror = choose(route, routing_key, self._rng)
        if role == CHALLENGER_ROLE:
            return await self._challenger_with_fallback(family, tensors)
        prediction = await self._timed_champion(family, tensors)
        if mirror:
            task = asyncio.create_task(self._shadow(family, tensors, prediction))
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)
        return prediction

    async def _timed_champion(
        self, family: AnyFamily, tensors: dict[str, np.ndarray]
    ) -> Prediction:
        window = self.metrics.family(family.name).champion
        started = time.perf_counter()
        try:
            prediction = await self.backends[family.name].predict(tensors)
            _check_outputs(family, prediction)
        except GameserveError:
            window.record("", None, error=True)
            raise
        window.record(prediction.version, (time.perf_counter() - started) * 1000)
        return prediction

    async def _challenger_with_fallback(
        self, family: AnyFamily, tensors: dict[str, np.ndarray]
    ) -> Prediction:
        """Serve the challenger's answer only if it is sound; the champion's otherwise.

        Both run at once on the same inputs: the champion's answer is the
        fallback and the reference the challenger's behaviour is judged by.
        """
        champion = asyncio.create_task(self._timed_champion(family, tensors))
        try:
            challenger = await self._try_challenger(family, tensors)
        except OverloadedError:
            logger.warning("%s challenger is saturated", family.name)
            challenger = None
        reference = await champion
        sound = self._record_challenger(family, challenger, reference)
        if challenger is not None and sound:
            return challenger[0]
        return reference

    async def _shadow(
        self, family: AnyFamily, tensors: dict[str, np.ndarray], reference: Prediction
    ) -> None:
        try:
            challenger = await self._try_challenger(family, tensors)
        except OverloadedError:
            return  # mirroring is best effort: a busy challenger skips a copy, nobody waits
        self._record_challenger(family, challenger, reference)

    async def _try_challenger(
        self, family: AnyFamily, tensors: dict[str, np.ndarray]
    ) -> tuple[Prediction, float] | None:
        """The challenger's answer and latency; None if it failed. A busy
        challenger's refusal (OverloadedError) is the caller's to weigh."""
        started = time.perf_counter()
        try:
            prediction = await self.challengers[family.name].predict(tensors)
        except OverloadedError:
            raise
        except Exception as exc:  # any failure counts against the challenger, never the client
            logger.warning("%s challenger failed: %s", family.name, exc)
            return None
        return prediction, (time.perf_counter() - started) * 1000

    def _record_challenger(
        self,
        family: AnyFamily,
        challenger: tuple[Prediction, float] | None,
        reference: Prediction,
    ) -> bool:
        """Record one challenger outcome; True when its answer may be served."""
        window: VersionWindow = self.metrics.family(family.name).challenger
        route = self.routes.get(family.name)
        version = route.challenger_version if route else ""
        if challenger is None:
            window.record(version, None, error=True)
            return False
        prediction, latency_ms = challenger
        invalid = bool(family.invalid_rows(prediction.outputs).any())
        divergence = None
        if not invalid:
            divergence = float(np.mean(family.divergence(reference.outputs, prediction.outputs)))
        window.record(prediction.version, latency_ms, invalid=invalid, divergence=divergence)
        return not invalid

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
        _check_outputs(family, prediction)
        return prediction

    async def _explicit_challenger(
        self, family: AnyFamily, tensors: dict[str, np.ndarray]
    ) -> Prediction:
        prediction = await self.challengers[family.name].predict(tensors)
        _check_outputs(family, prediction)
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


def _check_outputs(family: AnyFamily, prediction: Prediction) -> None:
    """A model that emits NaN or broken outputs fails loudly, never reaches a game server."""
    if family.invalid_rows(prediction.outputs).any():
        raise InferenceError(
            f"{family.name} v{prediction.version}: outputs are missing, not finite or "
            "outside their range"
        )
