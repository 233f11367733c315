from __future__ import annotations

import json
from pathlib import Path

import pytest

from models import trainable_family
from models.runtime import OnnxModel
from pipelines import stack_commands
from pipelines.cli import main


def test_train_writes_onnx_and_metrics_and_prints_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GAMESERVE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GAMESERVE_TRAIN__TRAIN_SAMPLES", "3000")
    monkeypatch.setenv("GAMESERVE_TRAIN__EPOCHS", "2")
    assert main(["train", "--family", "npc-behavior"]) == 0
    exported = tmp_path / "exports" / "npc-behavior.onnx"
    metrics = json.loads((tmp_path / "exports" / "npc-behavior.metrics.json").read_text())
    assert 0 < metrics["teacher_agreement"] <= 1
    assert "teacher_agreement" in capsys.readouterr().out
    family = trainable_family("npc-behavior")
    OnnxModel(exported, family.contract, prefer_gpu=False).predict(family.example_inputs())


def test_a_mistyped_setting_is_one_line_naming_it_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GAMESERVE_TRAIN__EPOCHS", "zero")
    assert main(["train"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("invalid_settings: train.epochs: "), err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_the_cli_starts_without_ray_mlflow_or_torch() -> None:
    # `gameserve rollout pause` must not spend seconds importing what it never uses;
    # only `up`, `train` and `models` load them, when they run.
    import subprocess
    import sys

    heavy = ("ray", "mlflow", "torch", "onnx", "fastapi")
    probe = f"import sys, pipelines.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


def test_a_broken_family_spec_stops_the_cli_with_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "families"
    folder.mkdir()
    (folder / "skill.toml").write_text('name = "skill"\ndescription = "d"\n')
    monkeypatch.setenv("GAMESERVE_DATA_DIR", str(tmp_path))
    assert main(["status"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("invalid_input: ")
    assert "skill.toml" in error
    assert "inputs" in error  # the field it lacks
    assert "Traceback" not in error


def test_status_names_a_deployment_whose_cluster_is_full(
    capsys: pytest.CaptureFixture[str],
) -> None:
    scraped = (
        "# TYPE gameserve_capacity_exhausted gauge\n"
        'gameserve_capacity_exhausted{deployment="npc-behavior"} 1.0\n'
        'gameserve_capacity_exhausted{deployment="personalization"} 0.0\n'
        "# TYPE gameserve_capacity_short_replicas gauge\n"
        'gameserve_capacity_short_replicas{deployment="npc-behavior"} 4.0\n'
        'gameserve_capacity_short_replicas{deployment="personalization"} 0.0\n'
    )
    full = stack_commands.capacity_exhausted(scraped)
    assert full == {"npc-behavior": {"short_replicas": 4}}
    report = {"running": True, "pid": 1, "api_url": "http://127.0.0.1:1", "grpc_address": None,
              "metrics_url": "m", "dashboard_url": "d", "tracking_uri": "t",
              "mlflow_healthy": True, "admin_url": "a", "models": [],
              "capacity_exhausted": full}  # fmt: skip
    stack_commands._print_status(report)
    assert "Capacity exhausted: npc-behavior wants 4 more replicas" in capsys.readouterr().out
