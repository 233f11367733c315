"""The notebooks run top to bottom against a real tracking server."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from models import trainable_family
from models.npc import NpcActRequest
from pipelines.registry import CHALLENGER, ModelRegistry
from pipelines.rollout.commands import RegistryControls
from pipelines.tracking_server import EmbeddedTrackingServer
from pipelines.training import train_and_register
from serving.control.admin import create_admin_app
from serving.control.admin_server import AdminServer
from serving.dataplane.payload_files import Record
from serving.dataplane.payload_log import PayloadLog, PayloadLogConfig, new_request_id
from serving.protocol.keys import KeyStore
from tests.auth import TestKeys
from tests.mlflow.conftest import FAST
from tests.notebooks import run_notebook
from tests.payloads import npc_tick


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

    recorded = _record_traffic(tmp_path / "payloads")

    # It asks the stack's admin API (a real one over this registry) to roll the candidate out.
    keys = TestKeys.create(tmp_path / "keys.json")
    monkeypatch.setenv("GAMESERVE_API_KEY", keys.admin)
    admin_app = create_admin_app(RegistryControls(registry), KeyStore(keys.path))
    with AdminServer(admin_app, "127.0.0.1", 0) as admin:
        env = {"GAMESERVE_ADMIN_URL": admin.url}
        result = run_notebook("train_challenger.ipynb", env, tmp_path, monkeypatch)

    versions = registry.list_versions("npc-behavior")
    candidate = versions[-1]
    assert candidate.tags["gameserve.data_seed"] == "11"
    assert candidate.run_id is not None
    run = MlflowClient(tracking_server.url).get_run(candidate.run_id)
    assert run.data.params["recorded_rows"] == str(recorded)  # trained on what players sent
    assert f"'candidate': '{candidate.version}'" in result
    # Seeded training is deterministic: this candidate is within the notebook's
    # tolerance of the champion, so the notebook must have asked for its rollout.
    assert "'passed': True" in result, result
    assert registry.aliases("npc-behavior")[CHALLENGER] == candidate.version


def _record_traffic(root: Path) -> int:
    """Requests as the stack's payload log records them (its real writer), point-blank
    melees the generator never makes among them; the rows recorded."""
    family = trainable_family("npc-behavior")
    log = PayloadLog(PayloadLogConfig(root=root, replica="replica-1", sample=lambda _: 1.0))
    rows = 0
    for i in range(40):
        tick = npc_tick(8, prefix=f"m{i}")
        if i % 4 == 0:
            tick["npcs"][0]["enemies"] = [{"distance_m": 0.3, "bearing_deg": 0.0}]
        inputs = family.encode(NpcActRequest.model_validate(tick))
        record = Record(
            at_s=time.time(), request_id=new_request_id(), version="1", role="champion",
            source="fallback", fallback_reason="deadline", latency_ms=2.0, routing_key=f"m{i}",
            inputs=inputs, outputs=family.fallback_outputs(inputs),
        )  # fmt: skip
        log.offer(family.name, record)
        rows += 8
    log.close()
    return rows
