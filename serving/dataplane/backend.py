"""What runs a family's model for the data plane, and what it answers.

A backend is either a Ray Serve deployment (``serving.app.ray_backend``), a
session in the ingress replica's own process (``serving.dataplane.colocated``), or a
plain in-process ONNX session (``LocalBackend``, for tools and tests).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from models.errors import DeadlineExceededError, ModelNotReadyError
from models.runtime import OnnxModel
from serving.dataplane.game_time import Deadline, not_started

T = TypeVar("T")


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

    async def predict(
        self, inputs: dict[str, np.ndarray], deadline: Deadline | None = None
    ) -> Prediction:
        """The model's outputs; DeadlineExceededError if they cannot come by ``deadline``.

        Work whose deadline has passed before it starts is not started.
        """
        ...

    async def status(self) -> ModelStatus: ...


class LocalBackend:
    """An ONNX Runtime session in this process: for tools, tests and notebooks.

    Without a model it stands for a family that has no champion yet.
    """

    def __init__(self, family: str, model: OnnxModel | None, version: str | None) -> None:
        self.family = family
        self.model = model
        self.version = version

    async def predict(
        self, inputs: dict[str, np.ndarray], deadline: Deadline | None = None
    ) -> Prediction:
        model, version = self.model, self.version
        if model is None or version is None:
            raise ModelNotReadyError(f"model {self.family!r} has no version loaded yet")
        outputs = await within(asyncio.to_thread(model.run_validated, inputs), deadline)
        return Prediction(outputs, version)

    async def status(self) -> ModelStatus:
        if self.model is None:
            return ModelStatus(self.family, None, False, 0, "none")
        return ModelStatus(self.family, self.version, True, 1, self.model.device)


async def within(work: Awaitable[T], deadline: Deadline | None) -> T:
    """``work``'s result, or DeadlineExceededError (and ``work`` cancelled) at ``deadline``."""
    if deadline is None:
        return await work
    remaining = deadline.remaining_s()
    if remaining <= 0:
        if inspect.iscoroutine(work):
            work.close()
        raise not_started()
    try:
        return await asyncio.wait_for(work, remaining)
    except TimeoutError:
        raise DeadlineExceededError(
            f"no answer within the {deadline.budget_ms:g} ms deadline"
        ) from None
