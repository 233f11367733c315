"""The GPU path where this machine has no GPU: the fallback says so once, and the
I/O-binding run (what CUDA sessions use for batches) answers what a plain run does."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from models import runtime
from models.build import ModelBuild
from models.runtime import CPU_PROVIDER, OnnxModel

NPC = "npc-behavior"


def test_a_replica_meant_for_a_gpu_logs_one_line_when_it_serves_on_the_cpu(
    builds: dict[str, ModelBuild], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtime, "gpu_visible", lambda: True)  # a GPU assigned to the replica
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU_PROVIDER])  # plain wheel
    monkeypatch.setattr(runtime, "_warned", set())
    build = builds[NPC]
    with caplog.at_level(logging.WARNING, logger="models.runtime"):
        for _ in range(3):
            model = OnnxModel(build.onnx_model, build.family.contract, prefer_gpu=True)
            assert model.device == "cpu"
        # A CPU replica (prefer_gpu False) never asked for one: nothing to say.
        OnnxModel(build.onnx_model, build.family.contract, prefer_gpu=False)
    lines = [r.getMessage() for r in caplog.records if "GPU wanted" in r.getMessage()]
    assert lines == [
        "GPU wanted but serving on the CPU: a GPU is visible but this onnxruntime has no "
        "CUDA execution provider (install onnxruntime-gpu)"
    ]


@pytest.mark.parametrize("rows", [32, 1024])
def test_the_io_bound_run_answers_what_the_plain_run_does(
    builds: dict[str, ModelBuild], rows: int
) -> None:
    build = builds[NPC]
    model = OnnxModel(build.onnx_model, build.family.contract, prefer_gpu=False)
    feeds = build.family.example_inputs(rows=rows)
    plain = model.run_validated(feeds)
    bound = dict(zip(model._output_names, model._run_bound(feeds), strict=True))
    for name, values in plain.items():
        np.testing.assert_array_equal(bound[name], values)
