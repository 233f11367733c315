"""Families declared without Python: a TOML spec file, served on v2, canaried like any other.

A studio's data scientist who trains a model elsewhere (a skill model, a cheat
score) declares its tensor contract, picks output checks and a divergence
measure from the built-ins below, and registers ONNX versions built anywhere.
gameserve serves it on the Open Inference Protocol v2, and pre-flight and the
canary judge its versions with these declarations (it has no evaluation set,
so the live gates are the whole judgement). Example::

    name = "match-outcome"
    description = "Two teams' features -> each team's win probability"

    [[inputs]]
    name = "teams"
    dtype = "float32"
    shape = [-1, 2, 6]          # -1: dynamic; the first axis is the batch
    range = [0.0, 1.0]          # what example inputs are drawn from

    [[outputs]]
    name = "win_probability"
    dtype = "float32"
    shape = [-1, 2]
    checks = ["finite", "probabilities"]

    [divergence]
    measure = "total_variation"  # or "argmax", "mean_abs" (needs the output's range)

    [rollout_thresholds]
    max_divergence = 0.2
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.contract import FamilyContract, TensorSpec
from models.errors import InvalidInputError
from models.family import ModelFamily

Check = Literal["finite", "range", "probabilities"]
Measure = Literal["total_variation", "argmax", "mean_abs"]
# Rows of a probability output must sum to 1 within this (float32 softmax).
SUM_TOLERANCE = 1e-3
# Size given to a dynamic axis other than the batch in example inputs.
EXAMPLE_AXIS = 4


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorDecl(_Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    dtype: Literal["float32", "float64", "int32", "int64"]
    shape: tuple[int, ...] = Field(min_length=1, description="-1 for a dynamic axis")
    description: str = ""
    range: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _shape(self) -> TensorDecl:
        if self.shape[0] != -1:
            raise ValueError(f"{self.name}.shape: the first axis is the batch; write -1")
        if any(size == 0 or size < -1 for size in self.shape):
            raise ValueError(f"{self.name}.shape: sizes are positive, or -1 for dynamic")
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError(f"{self.name}.range: low must be below high")
        return self

    def tensor_spec(self) -> TensorSpec:
        shape = tuple(None if size == -1 else size for size in self.shape)
        return TensorSpec(self.name, self.dtype, shape, self.description)


class OutputDecl(TensorDecl):
    checks: tuple[Check, ...] = ("finite",)

    @model_validator(mode="after")
    def _checks(self) -> OutputDecl:
        if "range" in self.checks and self.range is None:
            raise ValueError(f"{self.name}.checks: 'range' needs the output's range")
        if "probabilities" in self.checks and len(self.shape) < 2:
            raise ValueError(f"{self.name}.checks: 'probabilities' needs an axis to sum over")
        return self


class DivergenceDecl(_Strict):
    measure: Measure
    output: str | None = Field(default=None, description="Default: the first output")


class FamilySpec(_Strict):
    """One family, as its spec file declares it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,62}$")
    description: str
    opset: int = Field(default=18, ge=7)
    inputs: tuple[TensorDecl, ...] = Field(min_length=1)
    outputs: tuple[OutputDecl, ...] = Field(min_length=1)
    divergence: DivergenceDecl
    serving: dict[str, Any] = Field(default_factory=dict, description="FamilyServing fields")
    rollout_thresholds: dict[str, Any] = Field(default_factory=dict)
    fallback: dict[str, Any] | None = Field(
        default=None,
        description="A constant answer per row, by output name (each shaped as the output "
        "without its batch axis): what a request gets when the model misses its deadline. "
        "None: such a request gets an error.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> FamilySpec:
        names = [t.name for t in (*self.inputs, *self.outputs)]
        if len(set(names)) != len(names):
            raise ValueError("inputs, outputs: tensor names must be unique")
        target = self.divergence_output()
        if target is None:
            raise ValueError(f"divergence.output: no output named {self.divergence.output!r}")
        if self.divergence.measure == "mean_abs" and target.range is None:
            raise ValueError(f"divergence.measure: 'mean_abs' needs {target.name}.range")
        if self.fallback is not None:
            self._check_fallback(self.fallback)
        return self

    def _check_fallback(self, fallback: dict[str, Any]) -> None:
        names = {o.name for o in self.outputs}
        if set(fallback) != names:
            raise ValueError(f"fallback: one constant per output, for {sorted(names)}")
        for decl in self.outputs:
            if -1 in decl.shape[1:]:
                raise ValueError(
                    f"fallback.{decl.name}: a constant needs fixed axes after the first"
                )
            value = np.asarray(fallback[decl.name], dtype=np.float64)
            if value.shape != decl.shape[1:]:
                raise ValueError(f"fallback.{decl.name}: shape {list(value.shape)}, the output "
                                 f"is {list(decl.shape[1:])} per row")  # fmt: skip
        outputs = {name: np.asarray([value], np.float64) for name, value in fallback.items()}
        if SpecFamily(self).invalid_rows(outputs).any():
            raise ValueError("fallback: the constant fails the outputs' own checks")

    def divergence_output(self) -> OutputDecl | None:
        wanted = self.divergence.output or self.outputs[0].name
        return next((o for o in self.outputs if o.name == wanted), None)


class SpecFamily(ModelFamily[BaseModel, BaseModel]):
    """A family built from a ``FamilySpec``: no Python of its own, v2 only."""

    def __init__(self, spec: FamilySpec) -> None:
        self.spec = spec
        self.contract = FamilyContract(
            name=spec.name,
            inputs=tuple(t.tensor_spec() for t in spec.inputs),
            outputs=tuple(t.tensor_spec() for t in spec.outputs),
            opset=spec.opset,
        )
        self.description = spec.description
        self.serving_defaults = MappingProxyType(dict(spec.serving))
        self.rollout_thresholds = MappingProxyType(dict(spec.rollout_thresholds))
        self.fallback_policy = None if spec.fallback is None else "a constant (spec file)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SpecFamily) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec.name)

    def __reduce__(self) -> tuple[type[SpecFamily], tuple[FamilySpec]]:
        return SpecFamily, (self.spec,)

    def invalid_rows(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        bad = super().invalid_rows(outputs)
        if bad.all():
            return bad
        rows = len(bad)
        for decl in self.spec.outputs:
            array = outputs[decl.name]
            flat = array.reshape(rows, -1)
            with np.errstate(invalid="ignore"):
                if "range" in decl.checks and decl.range is not None:
                    low, high = decl.range
                    bad |= ((flat < low) | (flat > high)).any(axis=1)
                if "probabilities" in decl.checks:
                    sums = array.sum(axis=-1).reshape(rows, -1)
                    bad |= (flat < 0).any(axis=1) | (np.abs(sums - 1.0) > SUM_TOLERANCE).any(axis=1)
        return bad

    def divergence(
        self, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]
    ) -> np.ndarray:
        decl = self.spec.divergence_output()
        assert decl is not None  # validated with the spec
        a, b = reference[decl.name], candidate[decl.name]
        rows = len(a)
        measure = self.spec.divergence.measure
        if measure == "total_variation":
            per_group = 0.5 * np.abs(a - b).sum(axis=-1)
            result = per_group.reshape(rows, -1).mean(axis=1)
        elif measure == "argmax":
            result = (a.argmax(axis=-1) != b.argmax(axis=-1)).reshape(rows, -1).mean(axis=1)
        else:  # mean_abs, scaled by the declared range
            assert decl.range is not None
            span = decl.range[1] - decl.range[0]
            result = (np.abs(a - b) / span).reshape(rows, -1).mean(axis=1)
        clipped: np.ndarray = np.clip(result.astype(np.float64), 0.0, 1.0)
        return clipped

    def fallback_outputs(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.spec.fallback is None:
            return super().fallback_outputs(inputs)
        rows = len(next(iter(inputs.values())))
        dtypes = {decl.name: decl.dtype for decl in self.spec.outputs}
        return {
            name: np.broadcast_to(np.asarray(value, dtypes[name]), (rows, *np.shape(value))).copy()
            for name, value in self.spec.fallback.items()
        }

    def example_inputs(self, rows: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        examples: dict[str, np.ndarray] = {}
        for decl in self.spec.inputs:
            shape = (max(rows, 2), *(EXAMPLE_AXIS if s == -1 else s for s in decl.shape[1:]))
            low, high = decl.range or ((0.0, 1.0) if decl.dtype.startswith("float") else (0, 10))
            if decl.dtype.startswith("float"):
                examples[decl.name] = rng.uniform(low, high, shape).astype(decl.dtype)
            else:
                integers = rng.integers(int(low), int(high), shape, endpoint=True)
                examples[decl.name] = integers.astype(decl.dtype)
        return examples


def read_spec(path: Path) -> FamilySpec:
    """The spec in ``path``; a clear error naming the file and field otherwise."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInputError(f"{path}: not a readable TOML spec: {exc}") from exc
    try:
        return FamilySpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'spec'}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidInputError(f"{path}: {problems}") from exc


def read_spec_folder(folder: Path) -> list[FamilySpec]:
    """Every ``*.toml`` spec in ``folder`` (none when it does not exist), by file name."""
    if not folder.is_dir():
        return []
    return [read_spec(path) for path in sorted(folder.glob("*.toml"))]
