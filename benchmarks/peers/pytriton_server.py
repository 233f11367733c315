"""NVIDIA PyTriton: a real Triton server in front of a Python callable running the
NPC model through ONNX Runtime (runs in its own venv, numpy<2).

    <venv>/bin/python benchmarks/peers/pytriton_server.py --model npc.onnx --port 8100

Triton's own HTTP server speaks v2 JSON and binary tensors; requests reach the
Python callable over PyTriton's proxy, with Triton's dynamic batcher in front
(PyTriton's default), so concurrent single-NPC requests are batched the way
Triton users would run this model.
"""

from __future__ import annotations

import argparse
import os
import socket
import sysconfig

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

NAME = "npc-behavior"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=None)
    args = parser.parse_args()
    # Triton's Python backend stub links libpython, which a venv does not carry.
    libdir = sysconfig.get_config_var("LIBDIR")
    os.environ["LD_LIBRARY_PATH"] = ":".join(
        p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, ["CPUExecutionProvider"])
    output = session.get_outputs()[0].name

    @batch  # type: ignore[untyped-decorator]
    def infer(observation: np.ndarray) -> dict[str, np.ndarray]:
        (probs,) = session.run([output], {"observation": observation})
        return {output: probs}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port or free_port(),
        metrics_address="127.0.0.1",
        metrics_port=free_port(),
        log_verbose=0,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=NAME,
            infer_func=infer,
            inputs=[Tensor(name="observation", dtype=np.float32, shape=(40,))],
            outputs=[Tensor(name=output, dtype=np.float32, shape=(-1,))],
            config=ModelConfig(max_batch_size=1024),  # the 1,024-NPC tick
        )
        triton.serve()


if __name__ == "__main__":
    main()
