"""The tensor contract of a model family: names, dtypes and shapes.

The contract is what the ONNX graph, the JSON API, the Open Inference Protocol
route and the rollout pre-flight all agree on. Axis ``None`` is dynamic; the
first axis of every tensor is the batch axis.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

from models.errors import InvalidInputError

BATCH_AXIS = "batch"


class RequestModel(BaseModel):
    """A JSON request of the game API: unknown fields and coerced types are errors.

    A misspelt field (``armour``) would otherwise be dropped silently and its
    default used, and ``"health": "0.5"`` would pass as a number.
    """

    model_config = ConfigDict(extra="forbid", strict=True)


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor. ``shape[0]`` is always the dynamic batch axis."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    description: str = ""
    # Inputs beyond it are refused: far outside anything a model was trained on,
    # they overflow float32 inside it and come out as NaN. Not in the fingerprint.
    max_abs: float = 1e6

    def __post_init__(self) -> None:
        if not self.shape or self.shape[0] is not None:
            raise ValueError(f"tensor {self.name!r} must start with a dynamic batch axis")

    @property
    def numpy_dtype(self) -> np.dtype[np.generic]:
        return np.dtype(self.dtype)

    def validate(self, array: np.ndarray) -> np.ndarray:
        """Return ``array`` in this spec's dtype, or raise naming the tensor."""
        if array.ndim != len(self.shape):
            raise InvalidInputError(
                f"{self.name}: expected {len(self.shape)} dimensions {self.shape_text()}, "
                f"got shape {list(array.shape)}"
            )
        for axis, (want, got) in enumerate(zip(self.shape, array.shape, strict=True)):
            if want is not None and want != got:
                raise InvalidInputError(
                    f"{self.name}: axis {axis} must have size {want} {self.shape_text()}, "
                    f"got shape {list(array.shape)}"
                )
        if array.shape[0] == 0:
            raise InvalidInputError(f"{self.name}: the batch is empty")
        if array.dtype.kind not in "fiub":
            raise InvalidInputError(f"{self.name}: expected numbers, got dtype {array.dtype}")
        converted = array.astype(self.numpy_dtype, copy=False)
        if converted.dtype.kind == "f":
            if not np.isfinite(converted).all():
                raise InvalidInputError(f"{self.name}: contains NaN or infinite values")
            if converted.size and float(np.abs(converted).max()) > self.max_abs:
                raise InvalidInputError(
                    f"{self.name}: values beyond ±{self.max_abs:g} are outside the model's domain"
                )
        return converted

    def shape_text(self) -> str:
        return "[" + ", ".join("-1" if d is None else str(d) for d in self.shape) + "]"


@dataclass(frozen=True)
class FamilyContract:
    """Inputs and outputs of a model family, plus the ONNX opset it exports with."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name)

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name)

    def validate_inputs(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check every input tensor and that all share one batch size."""
        missing = [spec.name for spec in self.inputs if spec.name not in arrays]
        if missing:
            raise InvalidInputError(f"missing input tensor(s): {', '.join(missing)}")
        unknown = sorted(set(arrays) - {spec.name for spec in self.inputs})
        if unknown:
            raise InvalidInputError(f"unknown input tensor(s): {', '.join(unknown)}")
        checked = {spec.name: spec.validate(np.asarray(arrays[spec.name])) for spec in self.inputs}
        sizes = {name: array.shape[0] for name, array in checked.items()}
        if len(set(sizes.values())) > 1:
            raise InvalidInputError(f"inputs disagree on the batch size: {sizes}")
        return checked

    def fingerprint(self) -> str:
        """A stable hash of the contract; equal fingerprints mean swappable models."""
        payload = {
            "inputs": [(s.name, s.dtype, list(s.shape)) for s in self.inputs],
            "outputs": [(s.name, s.dtype, list(s.shape)) for s in self.outputs],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _by_name(specs: tuple[TensorSpec, ...], name: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise KeyError(name)
