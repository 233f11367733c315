"""The registry against a real mlflow server: register, alias, resolve, refuse."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import requests
from mlflow import MlflowClient

from models import trainable_family
from models.errors import ModelArtifactError, ModelNotFoundError, RegistryUnavailableError
from models.runtime import OnnxModel
from pipelines.registry import (
    CHALLENGER,
    CHAMPION,
    EVENT_TAG_PREFIX,
    PREVIOUS,
    TAG_SHA256,
    TAG_SIGNATURE,
    ModelRegistry,
    connect,
)
from pipelines.signing import VersionSigner
from pipelines.tracking_server import EmbeddedTrackingServer, MlflowCredentials
from pipelines.training import RegisteredVersion, register_onnx, train_and_register
from tests.attacks import forge_cache_entry, move_champion, register_outside_the_pipeline
from tests.bad_models import beyond_onnx_runtime
from tests.mlflow.conftest import CLIENT, FAST

NPC = trainable_family("npc-behavior")


def _register(registry: ModelRegistry, seed: int) -> RegisteredVersion:
    return train_and_register(NPC, FAST.model_copy(update={"seed": seed}), registry)


def _stored_artifact(server: EmbeddedTrackingServer, registry: ModelRegistry, version: str) -> Path:
    """Where the server keeps a version's ONNX file on its own disk."""
    uri = MlflowClient(registry.tracking_uri).get_model_version_download_uri(NPC.name, version)
    relative = uri.removeprefix("mlflow-artifacts:/")
    return server.root / "artifacts" / relative / "model.onnx"


def test_two_versions_aliases_move_and_each_resolves(registry: ModelRegistry) -> None:
    first, second = _register(registry, seed=1), _register(registry, seed=2)
    assert int(second.version) == int(first.version) + 1
    assert first.sha256 != second.sha256

    registry.promote(NPC.name, first.version)
    registry.set_alias(NPC.name, CHALLENGER, second.version)
    champion = registry.resolve(NPC.name, CHAMPION)
    challenger = registry.resolve(NPC.name, CHALLENGER)
    assert (champion.version, challenger.version) == (first.version, second.version)
    assert (champion.sha256, challenger.sha256) == (first.sha256, second.sha256)
    assert champion.source == challenger.source == "registry"

    registry.promote(NPC.name, second.version)
    aliases = registry.aliases(NPC.name)
    assert aliases[CHAMPION] == second.version
    assert aliases[PREVIOUS] == first.version
    assert CHALLENGER not in aliases
    assert registry.resolve(NPC.name).version == second.version

    assert registry.rollback(NPC.name, reason="test") == first.version
    assert registry.resolve(NPC.name).version == first.version
    tags = registry.version_tags(NPC.name, second.version)
    events = [key for key in tags if key.startswith(EVENT_TAG_PREFIX)]
    assert any(key.endswith(".promoted") for key in events)
    assert any(key.endswith(".rolled_back") for key in events)

    listed = {v.version: v for v in registry.list_versions(NPC.name)}
    assert CHAMPION in listed[first.version].aliases
    assert listed[second.version].tags[TAG_SHA256] == second.sha256


def test_training_run_records_params_metrics_tags_and_signature(registry: ModelRegistry) -> None:
    registered = _register(registry, seed=3)
    run = MlflowClient(registry.tracking_uri).get_run(registered.run_id)
    assert run.data.metrics["teacher_agreement"] == pytest.approx(
        registered.metrics["teacher_agreement"]
    )
    assert run.data.params["seed"] == "3"
    assert run.data.params["opset"] == "18"
    assert run.data.tags["gameserve.data_seed"] == "3"
    assert run.data.tags["gameserve.code_revision"]
    info = mlflow.models.get_model_info(f"models:/{NPC.name}/{registered.version}")
    assert info.signature.inputs.input_names() == ["observation"]
    assert info.signature.outputs.input_names() == ["action_probs"]
    assert "onnx" in info.flavors


def test_resolved_file_is_onnx_only_cached_once_and_runs(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered = _register(registry, seed=4)
    downloads: list[object] = []
    original = registry._download

    def counted(*args: Any) -> Any:
        downloads.append(args)
        return original(*args)

    monkeypatch.setattr(registry, "_download", counted)
    first = registry.resolve_version(NPC.name, registered.version)
    again = registry.resolve_version(NPC.name, registered.version)
    assert first.path == again.path
    assert len(downloads) == 0  # registration's round trip already cached it
    assert sorted(p.name for p in first.path.parent.iterdir()) == ["meta.json", "model.onnx"]
    runtime = OnnxModel(first.path, NPC.contract, prefer_gpu=False)
    probs = runtime.predict(NPC.example_inputs(rows=8))["action_probs"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_unknown_names_are_not_found(registry: ModelRegistry) -> None:
    _register(registry, seed=5)
    with pytest.raises(ModelNotFoundError, match="no version holds the alias 'nightly'"):
        registry.resolve(NPC.name, "nightly")
    with pytest.raises(ModelNotFoundError, match="version 9999 does not exist"):
        registry.resolve_version(NPC.name, "9999")
    with pytest.raises(ModelNotFoundError, match="unknown model family"):
        registry.resolve("dragons")


def test_corrupt_or_missing_artifact_is_refused_and_champion_stays(
    registry: ModelRegistry,
    tracking_server: EmbeddedTrackingServer,
    tmp_path: Path,
    signer: VersionSigner,
) -> None:
    good, corrupt, missing = (_register(registry, seed=s) for s in (6, 7, 8))
    registry.promote(NPC.name, good.version)
    _stored_artifact(tracking_server, registry, corrupt.version).write_bytes(b"\x08garbage")
    _stored_artifact(tracking_server, registry, missing.version).unlink()

    # A fresh replica's view: an empty cache, so every artifact is downloaded.
    fresh = connect(tracking_server.url, CLIENT, tmp_path / "fresh-cache", signer)
    registry.set_alias(NPC.name, CHALLENGER, corrupt.version)
    with pytest.raises(ModelArtifactError, match="checksum mismatch"):
        fresh.resolve(NPC.name, CHALLENGER)
    with pytest.raises(ModelArtifactError, match="could not be downloaded"):
        fresh.resolve_version(NPC.name, missing.version)
    with pytest.raises(ModelArtifactError, match="checksum mismatch"):
        fresh.promote(NPC.name, corrupt.version)

    assert fresh.aliases(NPC.name)[CHAMPION] == good.version
    champion = fresh.resolve(NPC.name)
    assert (champion.version, champion.sha256) == (good.version, good.sha256)
    assert not fresh.cache.model_path(NPC.name, corrupt.version).exists()


def test_outage_keeps_serving_the_cached_champion(
    own_server: EmbeddedTrackingServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    signer: VersionSigner,
) -> None:
    registry = connect(own_server.url, CLIENT, tmp_path / "cache", signer)
    registered = _register(registry, seed=9)
    registry.promote(NPC.name, registered.version)
    before = registry.resolve(NPC.name)
    assert before.source == "registry"

    own_server.stop()
    with caplog.at_level(logging.WARNING, logger="pipelines.registry"):
        during = registry.resolve(NPC.name)
    assert (during.version, during.path, during.source) == (before.version, before.path, "cache")
    assert "unreachable" in caplog.text
    assert OnnxModel(during.path, NPC.contract, prefer_gpu=False).predict(NPC.example_inputs())

    with pytest.raises(RegistryUnavailableError):
        registry.resolve(NPC.name, CHALLENGER)  # never resolved here, nothing to fall back on
    with pytest.raises(RegistryUnavailableError):
        registry.set_alias(NPC.name, CHALLENGER, registered.version)
    empty = ModelRegistry(own_server.url, tmp_path / "empty-cache", signer)
    with pytest.raises(RegistryUnavailableError, match="nothing cached"):
        empty.resolve(NPC.name)


def test_a_damaged_cache_file_is_fetched_again(registry: ModelRegistry) -> None:
    registered = _register(registry, seed=10)
    resolved = registry.resolve_version(NPC.name, registered.version)
    resolved.path.write_bytes(b"tampered")
    again = registry.resolve_version(NPC.name, registered.version)
    assert again.path.read_bytes() != b"tampered"
    assert again.sha256 == registered.sha256


def test_a_version_registered_outside_the_pipeline_is_never_resolved(
    registry: ModelRegistry, tracking_server: EmbeddedTrackingServer, nan_npc_model: bytes
) -> None:
    """The MLflow takeover: a run, an upload, a version with copied tags, the alias."""
    good = _register(registry, seed=21)
    registry.promote(NPC.name, good.version)
    forged = register_outside_the_pipeline(tracking_server.url, NPC.name, nan_npc_model)
    copied = register_outside_the_pipeline(
        tracking_server.url, NPC.name, nan_npc_model, copy_signature_of=good.version
    )
    for version in (forged, copied):
        with pytest.raises(ModelArtifactError, match="not signed by this platform"):
            registry.resolve_version(NPC.name, version)
        with pytest.raises(ModelArtifactError, match="not signed by this platform"):
            registry.promote(NPC.name, version)

    move_champion(tracking_server.url, NPC.name, forged)
    with pytest.raises(ModelArtifactError, match="the pipeline did not put it there"):
        registry.resolve(NPC.name, CHAMPION)
    # Even a signed version is refused as champion when the alias moved by hand.
    move_champion(tracking_server.url, NPC.name, _register(registry, seed=22).version)
    with pytest.raises(ModelArtifactError, match="the pipeline did not put it there"):
        registry.resolve(NPC.name, CHAMPION)
    registry.promote(NPC.name, good.version)  # the platform's own move is accepted again
    assert registry.resolve(NPC.name, CHAMPION).version == good.version


def test_a_forged_cache_entry_is_never_served(
    registry: ModelRegistry, own_server: EmbeddedTrackingServer, nan_npc_model: bytes
) -> None:
    registry = connect(own_server.url, CLIENT, registry.cache.root, registry.signer)
    good = _register(registry, seed=23)
    registry.promote(NPC.name, good.version)
    registry.resolve(NPC.name)  # cached, alias remembered
    forge_cache_entry(registry.cache.root, NPC.name, good.version, nan_npc_model)
    forge_cache_entry(registry.cache.root, NPC.name, "99", nan_npc_model)
    own_server.stop()  # offline: only the cache can answer
    for version in (good.version, "99"):
        with pytest.raises(RegistryUnavailableError, match="nothing cached"):
            registry.resolve_version(NPC.name, version)


def test_an_artifact_onnx_runtime_cannot_load_is_refused_everywhere(
    registry: ModelRegistry, tracking_server: EmbeddedTrackingServer
) -> None:
    unloadable = beyond_onnx_runtime(NPC.train(FAST).export())
    with pytest.raises(ModelArtifactError, match="ONNX Runtime cannot load it"):
        register_onnx(NPC, unloadable, registry, metrics={}, params={}, seed=1)
    # Registered by hand with a signature made by the platform's key (a key holder's
    # mistake, not an attack): still refused before it reaches the cache.
    version = register_outside_the_pipeline(tracking_server.url, NPC.name, unloadable)
    signature = registry.signer.sign_version(
        NPC.name, hashlib.sha256(unloadable).hexdigest(), NPC.contract.fingerprint()
    )
    MlflowClient(registry.tracking_uri).set_model_version_tag(
        NPC.name, version, TAG_SIGNATURE, signature
    )
    with pytest.raises(ModelArtifactError, match="ONNX Runtime cannot load it"):
        registry.resolve_version(NPC.name, version)
    assert not registry.cache.model_path(NPC.name, version).exists()


def test_anonymous_calls_to_the_embedded_mlflow_are_refused(
    tracking_server: EmbeddedTrackingServer, credentials: MlflowCredentials
) -> None:
    """The takeover's first call, and its last, without the stack's credentials."""
    api = f"{tracking_server.url}/api/2.0/mlflow"
    create = requests.post(f"{api}/runs/create", json={"experiment_id": "0"}, timeout=10)
    alias = requests.post(
        f"{api}/registered-models/alias",
        json={"name": NPC.name, "alias": CHAMPION, "version": "1"},
        timeout=10,
    )
    search = requests.get(f"{api}/registered-models/search", timeout=10)
    assert (create.status_code, alias.status_code, search.status_code) == (401, 401, 401)
    assert requests.get(f"{tracking_server.url}/health", timeout=10).status_code == 200
    allowed = requests.get(f"{api}/registered-models/search", auth=credentials.auth(), timeout=10)
    assert allowed.status_code == 200
