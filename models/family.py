"""What a model family declares, what a trainable one adds, and the result of training one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
from pydantic import BaseModel

from models.contract import FamilyContract
from models.errors import ModelNotFoundError
from models.runtime import Predictor
from models.training import Dataset, EpochCallback, TrainSettings

if TYPE_CHECKING:
    # Networks, training and export only: serving processes never load torch.
    import torch

    from models.export import ParityReport


RequestT = TypeVar("RequestT", bound=BaseModel)
ResponseT = TypeVar("ResponseT", bound=BaseModel)


@dataclass(frozen=True)
class GameRoute(Generic[RequestT, ResponseT]):
    """How a family is offered on the game API: JSON in the game's own terms."""

    path: str  # under /v1, e.g. "/npc/act"
    summary: str  # the route's documentation, first line first
    request_model: type[RequestT]
    response_model: type[ResponseT]
    batch_field: str  # the list in a request whose entries become batch rows
    # The request's own id (a player) that keeps a caller on one version during
    # a rollout when it sends no X-Session-Id or X-Player-Id header.
    routing_key: Callable[[RequestT], str | None] | None = None
    # One key per batch row naming the player and the question (e.g. the offers asked
    # about): rows with equal keys would get the same answer from one version. Where a
    # family declares them, a recent answer may stand in when the model cannot be afforded.
    row_keys: Callable[[RequestT], list[str]] | None = None


class ModelFamily(ABC, Generic[RequestT, ResponseT]):
    """A kind of gameplay model as serving and rollouts see it, declared in one place.

    Generic over its game route's request and response models, so a family's
    ``encode`` and ``decode`` are typed where it is named; in the registry,
    where any family may be, it is ``AnyFamily``.

    Its contract, output checks, divergence measure, an optional game route and
    its defaults for serving and rollouts: everything gameserve needs to serve
    versions of it and canary one against another. Routes, settings and the CLI
    derive from the registered families (``models.FAMILIES``). Subclasses know
    nothing of serving or tracking.
    """

    contract: FamilyContract
    description: str
    # None: served on the Open Inference Protocol v2 only.
    game_route: GameRoute[RequestT, ResponseT] | None = None
    # The family's own defaults, by setting name: for serving (its FamilyServing:
    # batching, placement, queue bounds) and for the canary's thresholds (its
    # Thresholds). Validated where they are used; settings override them.
    serving_defaults: Mapping[str, Any] = MappingProxyType({})
    rollout_thresholds: Mapping[str, Any] = MappingProxyType({})
    # The designer-approved answer when the model cannot give one in time, in a
    # few words (shown in /v1/models); None: the family has no fallback, and a
    # request that misses its deadline gets an error. See ``fallback_outputs``.
    fallback_policy: str | None = None
    # The quality figure (higher is better) pre-flight compares versions on;
    # None where gameserve has no evaluation set for the family.
    headline_metric: str | None = None

    @property
    def name(self) -> str:
        return self.contract.name

    @property
    def trainable(self) -> bool:
        """Whether gameserve trains it; other families' versions arrive built."""
        return False

    def invalid_rows(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Per row: True where an output breaks the family's invariants.

        The base check is finiteness; families add what their outputs promise.
        """
        rows = len(next(iter(outputs.values())))
        bad = np.zeros(rows, dtype=bool)
        for spec in self.contract.outputs:
            value = outputs.get(spec.name)
            if value is None or len(value) != rows:
                return np.ones(rows, dtype=bool)
            bad |= ~np.isfinite(value.reshape(rows, -1)).all(axis=1)
        return bad

    @abstractmethod
    def divergence(
        self, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]
    ) -> np.ndarray:
        """Per row: how differently two versions behave on the same inputs, in [0, 1]."""

    @abstractmethod
    def example_inputs(self, rows: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
        """Valid inputs, reproducible from ``seed``: a new artifact must answer them."""

    def evaluate(self, predict: Predictor, samples: int, seed: int) -> dict[str, float]:
        """Quality metrics of ``predict``, ``headline_metric`` among them; {} without a set."""
        return {}

    def fallback_outputs(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The ``fallback_policy``'s outputs for validated inputs, shaped as the model's.

        Computed on the request path when the model misses a deadline, so it must
        cost far less than the model and never fail on valid inputs.
        """
        raise ModelNotFoundError(f"{self.name} declares no fallback")

    def encode(self, request: RequestT) -> dict[str, np.ndarray]:
        """Turn a validated game-route request into the model's input tensors."""
        raise ModelNotFoundError(f"{self.name} has no game route")

    def decode(self, request: RequestT, outputs: dict[str, np.ndarray]) -> ResponseT:
        """Turn output tensors into the game-route response for ``request``."""
        raise ModelNotFoundError(f"{self.name} has no game route")


class TrainableFamily(ModelFamily[RequestT, ResponseT]):
    """A family gameserve trains itself: synthetic data, a torch network, an evaluation set."""

    headline_metric: str

    @property
    def trainable(self) -> bool:
        return True

    @abstractmethod
    def make_dataset(self, samples: int, seed: int) -> Dataset:
        """Generate labelled synthetic data, reproducible from ``seed``."""

    @abstractmethod
    def build_module(self) -> torch.nn.Module:
        """A fresh network whose ``forward`` takes the contract's inputs in order."""

    @abstractmethod
    def loss(
        self,
        module: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """Training loss of one mini-batch."""

    @abstractmethod
    def evaluate(self, predict: Predictor, samples: int, seed: int) -> dict[str, float]:
        """Quality metrics of ``predict`` and of the family's baselines."""

    @abstractmethod
    def edge_cases(self) -> list[dict[str, np.ndarray]]:
        """Extreme but valid inputs that parity must hold on."""

    def example_inputs(self, rows: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
        return self.make_dataset(max(rows, 2), seed).inputs

    def label(self, inputs: dict[str, np.ndarray]) -> Dataset | None:
        """Targets for inputs from elsewhere (recorded traffic), where the family can make
        them (a teacher); None where it cannot."""
        return None

    def train(
        self,
        settings: TrainSettings,
        extra: Dataset | None = None,
        on_epoch: EpochCallback | None = None,
    ) -> TrainedModel:
        """Train on ``settings.train_samples`` generated rows, plus ``extra`` (labelled
        recorded traffic) when given."""
        from models.fitting import fit, seed_everything

        seed_everything(settings.seed)
        data = self.make_dataset(settings.train_samples, settings.seed)
        if extra is not None:
            data = data.concat(extra)
        module = self.build_module()
        history = fit(module, data, self.loss, settings, on_epoch)
        return TrainedModel(family=self, module=module, settings=settings, loss_history=history)


@dataclass
class TrainedModel:
    """A trained network of one family, ready to evaluate and export."""

    family: TrainableFamily[Any, Any]
    module: torch.nn.Module
    settings: TrainSettings
    loss_history: list[float] = field(default_factory=list)

    def predictor(self) -> Predictor:
        from models.fitting import torch_predictor

        contract = self.family.contract
        return torch_predictor(
            self.module,
            tuple(s.name for s in contract.inputs),
            tuple(s.name for s in contract.outputs),
        )

    def export(self) -> bytes:
        from models.export import export_onnx

        example = self.family.example_inputs(rows=4, seed=self.settings.seed)
        return export_onnx(self.module, self.family.contract, example)

    def parity(self, onnx_model: bytes, random_rows: int = 256) -> ParityReport:
        """Parity on random rows, single rows and the family's edge cases."""
        from models.export import check_parity

        random_batch = self.family.example_inputs(rows=random_rows, seed=self.settings.seed + 1)
        single = {name: array[:1] for name, array in random_batch.items()}
        cases = [random_batch, single, *self.family.edge_cases()]
        return check_parity(self.module, onnx_model, self.family.contract, cases)


# A family as the registry holds it: any request and response models.
AnyFamily = ModelFamily[Any, Any]
AnyTrainableFamily = TrainableFamily[Any, Any]
