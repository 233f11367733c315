"""torch → ONNX export with a dynamic batch axis, and the parity check."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass

import numpy as np
import onnx
import torch

from models.contract import BATCH_AXIS, FamilyContract
from models.fitting import torch_predictor
from models.runtime import OnnxModel

PARITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ParityReport:
    """How far ONNX Runtime's outputs are from torch's on the same inputs."""

    max_abs_diff: float
    cases: int
    tolerance: float = PARITY_TOLERANCE

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def export_onnx(
    module: torch.nn.Module, contract: FamilyContract, example: dict[str, np.ndarray]
) -> bytes:
    """Export ``module`` to an ONNX model whose tensors follow ``contract``.

    The example batch must hold at least two rows: torch.export specialises an
    axis it sees with size 1, which would freeze the batch axis.
    """
    batch = torch.export.Dim(BATCH_AXIS)
    dynamic_shapes = tuple(
        {
            axis: batch if axis == 0 else torch.export.Dim(f"{spec.name}_axis{axis}")
            for axis, size in enumerate(spec.shape)
            if size is None
        }
        for spec in contract.inputs
    )
    args = tuple(torch.from_numpy(example[spec.name]) for spec in contract.inputs)
    module.eval()
    # The exporter prints progress to stdout and warns about axis renaming; a
    # library must not write to the caller's console.
    with redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=[spec.name for spec in contract.inputs],
            output_names=[spec.name for spec in contract.outputs],
            dynamic_shapes=dynamic_shapes,
            opset_version=contract.opset,
            optimize=True,
            verbose=False,
        )
    assert program is not None
    proto = program.model_proto
    proto.producer_name = "gameserve"
    onnx.checker.check_model(proto, full_check=True)
    serialized: bytes = proto.SerializeToString()
    return serialized


def check_parity(
    module: torch.nn.Module,
    onnx_model: bytes,
    contract: FamilyContract,
    cases: Sequence[dict[str, np.ndarray]],
) -> ParityReport:
    """Largest absolute difference between torch and ONNX Runtime over ``cases``."""
    reference = torch_predictor(
        module,
        tuple(spec.name for spec in contract.inputs),
        tuple(spec.name for spec in contract.outputs),
    )
    runtime = OnnxModel(onnx_model, contract, prefer_gpu=False)
    worst = 0.0
    for case in cases:
        expected = reference(case)
        actual = runtime.predict(case)
        for name, value in expected.items():
            worst = max(worst, float(np.max(np.abs(value - actual[name]))))
    return ParityReport(max_abs_diff=worst, cases=len(cases))
