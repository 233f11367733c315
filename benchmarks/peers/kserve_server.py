"""KServe's ModelServer serving the NPC model through ONNX Runtime (runs in its own venv).

    <venv>/bin/python benchmarks/peers/kserve_server.py --model npc.onnx --port 8100

A custom ``kserve.Model``, as KServe documents for a Python predictor: the
request's tensor goes to ONNX Runtime as is. One uvicorn worker; gRPC and
the per-request log lines off, so the peer does no more work per request than it must.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import kserve
import numpy as np
import onnxruntime as ort
import uvicorn
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from kserve.protocol.rest import server as rest_server

NAME = "npc-behavior"


class NpcModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, model_path: str) -> None:
        super().__init__(NAME)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(model_path, options, ["CPUExecutionProvider"])
        self.output = self.session.get_outputs()[0].name
        self.ready = True

    def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None
    ) -> InferResponse:
        observation = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        (probs,) = self.session.run([self.output], {"observation": observation})
        output = InferOutput(name=self.output, shape=list(probs.shape), datatype="FP32")
        output.set_data_from_numpy(probs, binary_data=payload.use_binary_outputs)
        return InferResponse(
            response_id=payload.id or "",
            model_name=NAME,
            infer_outputs=[output],
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


class LoopbackConfig(uvicorn.Config):
    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **{**kwargs, "host": "127.0.0.1"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # KServe binds 0.0.0.0 with no option to change it; benchmarks stay on loopback.
    rest_server.uvicorn.Config = LoopbackConfig
    server = kserve.ModelServer(
        http_port=args.port, workers=1, enable_grpc=False, enable_latency_logging=False
    )
    # The server configured logging: per-request access and timing lines off, as ours are.
    for name in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([NpcModel(args.model)])


if __name__ == "__main__":
    main()
