"""What someone who can write to MLflow (or to the model cache) but does not hold the
platform's signing key can do: a data scientist on a studio's shared server, or whoever
learnt the embedded server's password.

Each helper replays a finding of the hardening review with MLflow's plain client, the
calls its REST API took anonymously before the embedded server required a login.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from mlflow import MlflowClient

from models import get_family
from pipelines.registry import CHAMPION, TAG_CONTRACT, TAG_SHA256, TAG_SIGNATURE


def register_outside_the_pipeline(
    tracking_uri: str, family: str, onnx_model: bytes, copy_signature_of: str | None = None
) -> str:
    """A run, an uploaded ONNX file, a version with the contract tag copied and the
    checksum tag written over the uploader's own file; optionally the signature tag
    of another version copied too. Returns the new version."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    tags = {
        TAG_SHA256: hashlib.sha256(onnx_model).hexdigest(),
        TAG_CONTRACT: get_family(family).contract.fingerprint(),
    }
    if copy_signature_of is not None:
        tags[TAG_SIGNATURE] = client.get_model_version(family, copy_signature_of).tags[
            TAG_SIGNATURE
        ]
    experiment = client.get_experiment_by_name("attack") or client.get_experiment(
        client.create_experiment("attack")
    )
    run = client.create_run(experiment.experiment_id)
    with tempfile.TemporaryDirectory() as temp:
        path = Path(temp) / "model.onnx"
        path.write_bytes(onnx_model)
        client.log_artifact(run.info.run_id, str(path), artifact_path="model")
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(
        family, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags
    )
    return str(version.version)


def move_champion(tracking_uri: str, family: str, version: str) -> None:
    MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).set_registered_model_alias(
        family, CHAMPION, version
    )


def forge_cache_entry(cache_root: Path, family: str, version: str, onnx_model: bytes) -> None:
    """``model.onnx`` and a ``meta.json`` whose checksum matches it, written by hand."""
    folder = cache_root / family / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(onnx_model)
    meta = {"family": family, "version": version,
            "sha256": hashlib.sha256(onnx_model).hexdigest(), "signature": "0" * 64}  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(meta))
