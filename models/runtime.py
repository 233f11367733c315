"""ONNX Runtime sessions: the one way gameserve runs an exported model."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.contract import FamilyContract
from models.errors import GameserveError, InferenceError, ModelArtifactError

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

# A function from named input tensors to named output tensors: what evaluation,
# parity checks and the rollout gates call, whether torch or ONNX is behind it.
Predictor = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def gpu_visible() -> bool:
    """True when an NVIDIA device is present and not hidden from this process.

    Asking ONNX Runtime for CUDA on a machine without one logs an error on
    every session; checking the driver first keeps CPU machines quiet.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/nvidiactl").exists()


def choose_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA first when a GPU is visible and the wheel has it, the CPU always."""
    available = ort.get_available_providers()
    if prefer_gpu and CUDA_PROVIDER in available and gpu_visible():
        return [CUDA_PROVIDER, CPU_PROVIDER]
    return [CPU_PROVIDER]


class OnnxModel:
    """An ONNX Runtime session bound to a family contract."""

    def __init__(
        self,
        model: bytes | Path,
        contract: FamilyContract,
        *,
        prefer_gpu: bool = True,
        intra_op_threads: int = 1,
    ) -> None:
        options = ort.SessionOptions()
        # One thread per session: replicas scale out across cores, and a
        # session spinning threads over a tiny MLP costs more than it saves.
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(
            source, sess_options=options, providers=choose_providers(prefer_gpu)
        )
        self.contract = contract
        self.providers: list[str] = list(self.session.get_providers())
        self._output_names = [spec.name for spec in contract.outputs]
        logger.info("%s: ONNX Runtime session on %s", contract.name, ", ".join(self.providers))

    @property
    def device(self) -> str:
        return "cuda" if self.providers and self.providers[0] == CUDA_PROVIDER else "cpu"

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate inputs against the contract and run the session."""
        feeds = self.contract.validate_inputs(inputs)
        return self.run_validated(feeds)

    def run_validated(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on inputs the caller has already validated (the batching hot path)."""
        try:
            results = self.session.run(self._output_names, dict(feeds))
        except Exception as exc:  # ORT raises its own untyped errors
            raise InferenceError(f"{self.contract.name}: inference failed: {exc}") from exc
        return dict(zip(self._output_names, results, strict=True))


def open_verified(
    model: bytes | Path,
    contract: FamilyContract,
    example_inputs: Mapping[str, np.ndarray],
    *,
    label: str,
    prefer_gpu: bool = True,
    intra_op_threads: int = 1,
) -> OnnxModel:
    """An ONNX Runtime session over ``model`` that has answered ``example_inputs``.

    ``onnx.checker`` accepts files ONNX Runtime refuses (an IR version newer
    than it reads, an operator it lacks); only a session that ran proves an
    artifact servable. Any failure is a ModelArtifactError naming ``label``.
    """
    try:
        session = OnnxModel(
            model, contract, prefer_gpu=prefer_gpu, intra_op_threads=intra_op_threads
        )
        session.predict(example_inputs)  # the first run also allocates: not on a request
    except GameserveError as exc:
        raise ModelArtifactError(f"{label}: does not run in ONNX Runtime: {exc.message}") from exc
    except Exception as exc:  # ORT raises its own untyped errors
        raise ModelArtifactError(f"{label}: ONNX Runtime cannot load it: {exc}") from exc
    return session
