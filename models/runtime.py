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

# Batches at least this large run through I/O binding on CUDA: outputs land in
# host buffers ORT allocates once per run, without a copy per output through Python.
IO_BINDING_MIN_ROWS = 32

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


_warned: set[str] = set()


def _fell_back(reason: str) -> None:
    """One line per process and reason: a replica meant for a GPU runs on the CPU."""
    if reason not in _warned:
        _warned.add(reason)
        logger.warning("GPU wanted but serving on the CPU: %s", reason)


def choose_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA first when a GPU is visible and the wheel has it, the CPU always."""
    if prefer_gpu and gpu_visible():
        if CUDA_PROVIDER in ort.get_available_providers():
            return [CUDA_PROVIDER, CPU_PROVIDER]
        _fell_back(
            "a GPU is visible but this onnxruntime has no CUDA execution provider "
            "(install onnxruntime-gpu)"
        )
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
        if CUDA_PROVIDER in choose_providers(prefer_gpu) and self.device != "cuda":
            # ORT drops a provider it cannot initialize (driver, CUDA or cuDNN libraries).
            _fell_back("the CUDA execution provider did not initialize; see ONNX Runtime's log")
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
            if self.device == "cuda" and _rows(feeds) >= IO_BINDING_MIN_ROWS:
                results = self._run_bound(feeds)
            else:
                results = self.session.run(self._output_names, dict(feeds))
        except Exception as exc:  # ORT raises its own untyped errors
            raise InferenceError(f"{self.contract.name}: inference failed: {exc}") from exc
        return dict(zip(self._output_names, results, strict=True))

    def _run_bound(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """A batch through I/O binding: inputs copied to the device once, outputs bound
        to host memory, one synchronization for the whole run."""
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in self._output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        outputs: list[np.ndarray] = binding.copy_outputs_to_cpu()
        return outputs


def _rows(feeds: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 0


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
