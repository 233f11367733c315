"""What runs a family's model for the data plane, and what it answers.

A backend is either a Ray Serve deployment (``serving.app.ray_backend``), a
session in the ingress replica's own process (``serving.dataplane.colocated``), or a
plain in-process ONNX session (``LocalBackend``, for tools and tests).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from models.errors import ModelNotReadyError
from models.runtime import OnnxModel


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
