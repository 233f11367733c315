"""Seldon's MLServer serving the NPC model through ONNX Runtime (runs in its own venv).

    <venv>/bin/python benchmarks/peers/mlserver_server.py --model npc.onnx --port 8100

A custom ``MLModel`` runtime, as MLServer documents for Python models, decoding
the request with MLServer's own ``NumpyCodec``. MLServer speaks v2 JSON only
(no binary tensor extension). ``--parallel-workers 0`` (the default here)
runs inference in the server's own process: for a model that answers in
microseconds, MLServer's default of one worker process adds an IPC hop per
request and measured slower on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from mlserver import MLModel, MLServer
from mlserver.codecs import NumpyCodec
from mlserver.settings import ModelParameters, ModelSettings, Settings
from mlserver.types import InferenceRequest, InferenceResponse

NAME = "npc-behavior"


class NpcRuntime(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(
            self.settings.parameters.uri, options, ["CPUExecutionProvider"]
        )
        self.output = self.session.get_outputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        observation = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        (probs,) = self.session.run([self.output], {"observation": observation})
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(self.output, probs)],
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parallel-workers", type=int, default=0)
    parser.add_argument("--grpc-port", type=int, default=None)
    args = parser.parse_args()
    # Workers import the runtime by module path: make this file importable as a module.
    sys.path.insert(0, str(Path(__file__).parent))
    from mlserver_server import NpcRuntime as Runtime

    settings = Settings(
        host="127.0.0.1",
        http_port=args.port,
        grpc_port=args.grpc_port or free_port(),
        metrics_port=free_port(),
        debug=False,
        parallel_workers=args.parallel_workers,
        load_models_at_startup=False,
    )
    model = ModelSettings(
        name=NAME, implementation=Runtime, parameters=ModelParameters(uri=args.model)
    )
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    asyncio.run(serve(settings, model))


async def serve(settings: Settings, model: ModelSettings) -> None:
    # The worker pool's dispatcher needs the running loop at construction.
    await MLServer(settings).start([model])


if __name__ == "__main__":
    main()
