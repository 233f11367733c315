"""The data plane: every route's way to a model, whatever protocol it speaks.

Routes translate HTTP; the data plane validates tensors against the family
contract, bounds the request, calls the family's backend and checks what
comes back. A backend is either a Ray Serve deployment (``RayBackend``) or an
in-process ONNX session (``LocalBackend``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel

from models import get_family
from models.errors import (
    InferenceError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
)
from models.family import ModelFamily
from models.runtime import OnnxModel
from serving.batching import rows


@dataclass(frozen=True)
class Prediction:
    """Output tensors and the model version that produced them."""

    outputs: dict[str, np.ndarray]
    version: str


@dataclass(frozen=True)
class ModelStatus:
    family: str
    version: str | None
    ready: bool
    replicas: int
    device: str


class Backend(Protocol):
    """Runs one family's model; the data plane never knows how."""

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
    """Validation, bounds and output checks shared by every route."""

    def __init__(self, backends: Mapping[str, Backend], max_rows_per_request: int) -> None:
        self.backends = dict(backends)
        self.max_rows_per_request = max_rows_per_request

    def family(self, name: str) -> ModelFamily:
        if name not in self.backends:
            raise ModelNotFoundError(f"model {name!r} is not served here")
        return get_family(name)

    async def infer(
        self,
        name: str,
        inputs: Mapping[str, np.ndarray],
        version: str | None = None,
        field: str | None = None,
    ) -> Prediction:
        """Run named input tensors through the family's serving model.

        ``field`` names the batch in errors; the first input tensor by default.
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
        if version is not None:
            await self.require_version(name, version)
        prediction = await self.backends[name].predict(tensors)
        _check_outputs(family, prediction)
        return prediction

    async def infer_domain(self, name: str, request: BaseModel) -> tuple[Any, str]:
        """Run a game API request: encode, infer, decode."""
        family = self.family(name)
        prediction = await self.infer(name, family.encode(request), field=family.batch_field)
        return family.decode(request, prediction.outputs), prediction.version

    async def status(self, name: str) -> ModelStatus:
        self.family(name)
        return await self.backends[name].status()

    async def require_version(self, name: str, version: str) -> ModelStatus:
        status = await self.status(name)
        if status.version != version:
            raise ModelNotFoundError(
                f"model {name!r} version {version!r} is not serving (serving: {status.version})"
            )
        return status


def _check_outputs(family: ModelFamily, prediction: Prediction) -> None:
    """A model that emits NaN must fail loudly, never reach a game server."""
    for spec in family.contract.outputs:
        value = prediction.outputs.get(spec.name)
        if value is None or not np.isfinite(value).all():
            raise InferenceError(
                f"{family.name} v{prediction.version}: output {spec.name} is missing or not finite"
            )
