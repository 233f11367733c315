"""The registry against a real mlflow server: register, alias, resolve, refuse."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pytest

from models import FAMILIES
from models.errors import ModelArtifactError, ModelNotFoundError, RegistryUnavailableError
from models.runtime import OnnxModel
from pipelines.registry import (
    CHALLENGER,
    CHAMPION,
    EVENT_TAG_PREFIX,
    PREVIOUS,
    TAG_SHA256,
    ModelRegistry,
    connect,
)
from pipelines.tracking_server import EmbeddedTrackingServer
from pipelines.training import RegisteredVersion, train_and_register
from tests.mlflow.conftest import CLIENT, FAST

NPC = FAMILIES["npc-behavior"]


def _register(registry: ModelRegistry, seed: int) -> RegisteredVersion:
    return train_and_register(NPC, FAST.model_copy(update={"seed": seed}), registry)


def _stored_artifact(server: EmbeddedTrackingServer, registry: ModelRegistry, version: str) -> Path:
    """Where the server keeps a version's ONNX file on its own disk."""
    uri = registry.client.get_model_version_download_uri(NPC.name, version)
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
    tags = registry.client.get_model_version(NPC.name, second.version).tags
    events = [key for key in tags if key.startswith(EVENT_TAG_PREFIX)]
    assert any(key.endswith(".promoted") for key in events)
    assert any(key.endswith(".rolled_back") for key in events)

    listed = {v.version: v for v in registry.list_versions(NPC.name)}
    assert CHAMPION in listed[first.version].aliases
    assert listed[second.version].tags[TAG_SHA256] == second.sha256


def test_training_run_records_params_metrics_tags_and_signature(registry: ModelRegistry) -> None:
    registered = _register(registry, seed=3)
    run = registry.client.get_run(registered.run_id)
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
    downloads = []
    original = registry._download
    monkeypatch.setattr(registry, "_download", lambda *a: downloads.append(a) or original(*a))
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
    registry: ModelRegistry, tracking_server: EmbeddedTrackingServer, tmp_path: Path
) -> None:
    good, corrupt, missing = (_register(registry, seed=s) for s in (6, 7, 8))
    registry.promote(NPC.name, good.version)
    _stored_artifact(tracking_server, registry, corrupt.version).write_bytes(b"\x08garbage")
    _stored_artifact(tracking_server, registry, missing.version).unlink()

    # A fresh replica's view: an empty cache, so every artifact is downloaded.
    fresh = connect(tracking_server.url, CLIENT, tmp_path / "fresh-cache")
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
    own_server: EmbeddedTrackingServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = connect(own_server.url, CLIENT, tmp_path / "cache")
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
    empty = ModelRegistry(own_server.url, tmp_path / "empty-cache")
    with pytest.raises(RegistryUnavailableError, match="nothing cached"):
        empty.resolve(NPC.name)


def test_a_damaged_cache_file_is_fetched_again(registry: ModelRegistry) -> None:
    registered = _register(registry, seed=10)
    resolved = registry.resolve_version(NPC.name, registered.version)
    resolved.path.write_bytes(b"tampered")
    again = registry.resolve_version(NPC.name, registered.version)
    assert again.path.read_bytes() != b"tampered"
    assert again.sha256 == registered.sha256
