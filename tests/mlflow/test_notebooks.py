"""The notebooks run top to bottom against a real tracking server."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from models import trainable_family
from pipelines.registry import CHALLENGER, ModelRegistry
from pipelines.rollout.commands import RegistryControls
from pipelines.tracking_server import EmbeddedTrackingServer
from pipelines.training import train_and_register
from serving.http.admin import create_admin_app
from serving.http.admin_server import AdminServer
from serving.http.keys import KeyStore
from tests.auth import TestKeys
from tests.mlflow.conftest import FAST

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def test_train_challenger_notebook_registers_and_aliases_a_candidate(
    registry: ModelRegistry,
    tracking_server: EmbeddedTrackingServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    signing_key: Path,
    credentials_file: Path,
) -> None:
    champion = train_and_register(trainable_family("npc-behavior"), FAST, registry)
    registry.promote("npc-behavior", champion.version)
    # The kernel inherits this environment: the notebook reads its settings from it.
    monkeypatch.setenv("GAMESERVE_TRACKING__URI", tracking_server.url)
    monkeypatch.setenv("GAMESERVE_DATA_DIR", str(tmp_path))
    # The notebook signs with the stack's key and logs in with the stack's MLflow
    # credentials, both of which live in the data dir.
    shutil.copy(signing_key, tmp_path / "signing.key")
    shutil.copy(credentials_file, tmp_path / "mlflow-credentials.json")
    for key, value in FAST.model_dump().items():
        monkeypatch.setenv(f"GAMESERVE_TRAIN__{key.upper()}", str(value))

    # It asks the stack's admin API (a real one over this registry) to roll the candidate out.
    keys = TestKeys.create(tmp_path / "keys.json")
    monkeypatch.setenv("GAMESERVE_API_KEY", keys.admin)
    admin_app = create_admin_app(RegistryControls(registry), KeyStore(keys.path))
    notebook = nbformat.read(NOTEBOOKS / "train_challenger.ipynb", as_version=4)
    with AdminServer(admin_app, "127.0.0.1", 0) as admin:
        monkeypatch.setenv("GAMESERVE_ADMIN_URL", admin.url)
        resources = {"metadata": {"path": str(tmp_path)}}
        NotebookClient(notebook, timeout=300, resources=resources).execute()

    result = notebook.cells[-1].outputs[-1]["data"]["text/plain"]
    versions = registry.list_versions("npc-behavior")
    candidate = versions[-1]
    assert candidate.tags["gameserve.data_seed"] == "11"
    assert f"'candidate': '{candidate.version}'" in result
    # Seeded training is deterministic: this candidate is within the notebook's
    # tolerance of the champion, so the notebook must have asked for its rollout.
    assert "'passed': True" in result, result
    assert registry.aliases("npc-behavior")[CHALLENGER] == candidate.version
