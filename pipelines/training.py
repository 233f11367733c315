"""Training runs: one MLflow run per model version, registered under its family."""

from __future__ import annotations

import hashlib
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import onnx
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema
from mlflow.types.schema import TensorSpec as MlflowTensorSpec

from models.build import ModelBuild, build
from models.contract import TensorSpec
from models.family import AnyFamily, AnyTrainableFamily
from models.runtime import choose_providers, open_verified
from models.training import Dataset, EpochCallback, TrainSettings
from pipelines.registry import (
    TAG_CONTRACT,
    TAG_FAMILY,
    TAG_SHA256,
    TAG_SIGNATURE,
    ModelRegistry,
)

logger = logging.getLogger(__name__)

EXPERIMENT = "gameserve-training"


@dataclass(frozen=True)
class RegisteredVersion:
    family: str
    version: str
    run_id: str
    sha256: str
    metrics: dict[str, float]


def train_and_register(
    family: AnyTrainableFamily,
    settings: TrainSettings,
    registry: ModelRegistry,
    extra: Dataset | None = None,
    on_epoch: EpochCallback | None = None,
) -> RegisteredVersion:
    """Train ``family`` from scratch (with ``extra``, labelled recorded traffic, if given)
    and register the result as a new version."""
    built = build(family, settings, extra, on_epoch)
    return register_build(built, registry, extra_rows=len(extra or ()))


def register_build(
    result: ModelBuild, registry: ModelRegistry, extra_rows: int = 0
) -> RegisteredVersion:
    """Log a build as one MLflow run and register its ONNX model."""
    settings = result.trained.settings
    return register_onnx(
        result.family,
        result.onnx_model,
        registry,
        metrics=result.metrics,
        params={**settings.model_dump(), "recorded_rows": extra_rows},
        seed=settings.seed,
        loss_history=result.trained.loss_history,
    )


def register_onnx(
    family: AnyFamily,
    onnx_model: bytes,
    registry: ModelRegistry,
    *,
    metrics: dict[str, float],
    params: dict[str, object],
    seed: int,
    loss_history: list[float] | None = None,
) -> RegisteredVersion:
    """Log an ONNX model of ``family`` as one MLflow run and register it.

    The checksum and contract tags are attached in the same call that creates
    the version, so no reader ever sees a version it cannot verify.
    """
    contract = family.contract
    # Refused here, a model ONNX Runtime cannot run never becomes a version.
    open_verified(
        onnx_model, contract, family.example_inputs(rows=2, seed=seed),
        label=f"{family.name} (not registered)", prefer_gpu=False,
    )  # fmt: skip
    sha256 = hashlib.sha256(onnx_model).hexdigest()
    tags = {
        TAG_FAMILY: family.name,
        TAG_SHA256: sha256,
        TAG_CONTRACT: contract.fingerprint(),
        TAG_SIGNATURE: registry.signer.sign_version(family.name, sha256, contract.fingerprint()),
        "gameserve.data_seed": str(seed),
        "gameserve.code_revision": code_revision(),
        "gameserve.opset": str(contract.opset),
    }
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"{family.name}-seed{seed}") as run:
        mlflow.set_tags(tags)
        mlflow.log_params({**params, "opset": contract.opset})
        mlflow.log_metrics(metrics)
        for epoch, loss in enumerate(loss_history or []):
            mlflow.log_metric("train_loss", loss, step=epoch)
        info = mlflow.onnx.log_model(
            onnx_model=onnx.load_model_from_string(onnx_model),
            name="model",
            signature=ModelSignature(
                inputs=Schema([_mlflow_spec(s) for s in contract.inputs]),
                outputs=Schema([_mlflow_spec(s) for s in contract.outputs]),
            ),
            input_example=family.example_inputs(rows=2, seed=seed),
            # One self-contained file: the registry fetches and hashes exactly it.
            save_as_external_data=False,
            onnx_execution_providers=choose_providers(),
        )
    version = mlflow.register_model(info.model_uri, family.name, tags=tags)
    registered = RegisteredVersion(
        family=family.name,
        version=str(version.version),
        run_id=run.info.run_id,
        sha256=sha256,
        metrics=metrics,
    )
    # The round trip proves the stored artifact is byte-identical to what was built.
    registry.resolve_version(family.name, registered.version)
    logger.info(
        "%s: registered version %s (run %s)", family.name, registered.version, run.info.run_id
    )
    return registered


def _mlflow_spec(spec: TensorSpec) -> MlflowTensorSpec:
    shape = tuple(-1 if size is None else size for size in spec.shape)
    return MlflowTensorSpec(np.dtype(spec.dtype), shape, spec.name)


def code_revision() -> str:
    """The git commit this code came from, with ``-dirty`` for local edits."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit
