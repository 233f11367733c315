"""Train, export, parity-check and evaluate one family: what a model version is."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from models.errors import ModelArtifactError
from models.export import ParityReport
from models.family import AnyTrainableFamily, TrainedModel
from models.runtime import OnnxModel
from models.training import Dataset, EpochCallback, TrainSettings


@dataclass
class ModelBuild:
    """A trained family exported to ONNX, with the figures that vouch for it."""

    trained: TrainedModel
    onnx_model: bytes
    metrics: dict[str, float]
    parity: ParityReport
    train_seconds: float

    @property
    def family(self) -> AnyTrainableFamily:
        return self.trained.family

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.onnx_model).hexdigest()


def build(
    family: AnyTrainableFamily,
    settings: TrainSettings,
    extra: Dataset | None = None,
    on_epoch: EpochCallback | None = None,
) -> ModelBuild:
    """Train ``family`` (on ``extra`` too, when given) and evaluate the exported ONNX
    model, not the torch one.

    The ONNX model is what serves, so its figures are the ones recorded.
    Raises when parity fails: such a model must never be registered.
    """
    started = time.perf_counter()
    trained = family.train(settings, extra, on_epoch)
    train_seconds = time.perf_counter() - started
    onnx_model = trained.export()
    parity = trained.parity(onnx_model)
    if not parity.passed:
        raise ModelArtifactError(
            f"{family.name}: ONNX parity failed, max |torch - onnx| = {parity.max_abs_diff:.2e}"
        )
    runtime = OnnxModel(onnx_model, family.contract, prefer_gpu=False)
    metrics = family.evaluate(runtime.predict, settings.eval_samples, settings.seed)
    metrics["parity_max_abs_diff"] = parity.max_abs_diff
    metrics["train_seconds"] = train_seconds
    return ModelBuild(trained, onnx_model, metrics, parity, train_seconds)
