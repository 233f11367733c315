from __future__ import annotations

import json
from pathlib import Path

import pytest

from models import FAMILIES
from models.runtime import OnnxModel
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
    family = FAMILIES["npc-behavior"]
    OnnxModel(exported, family.contract, prefer_gpu=False).predict(family.example_inputs())


def test_unknown_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAMESERVE_TRAIN__EPOCHS", "zero")
    with pytest.raises(ValueError, match="epochs"):
        main(["train"])
