"""The baseline: what a studio would write without a platform.

One uvicorn process, ONNX Runtime in-process, the same request and response
models and the same encode/decode as gameserve. No batching, no routing, no
scaling beyond this process.

    python -m benchmarks.plain_fastapi --model npc.onnx --port 8100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from models import FAMILIES
from models.npc import NpcActRequest, NpcActResponse
from models.runtime import OnnxModel


def create_app(model_path: Path) -> FastAPI:
    family = FAMILIES["npc-behavior"]
    model = OnnxModel(model_path, family.contract, prefer_gpu=False)
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/npc/act")
    async def npc_act(request: NpcActRequest) -> NpcActResponse:
        # A model this small answers in microseconds: a thread hop would cost more.
        outputs = model.predict(family.encode(request))
        response = family.decode(request, outputs)
        assert isinstance(response, NpcActResponse)
        return response

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(args.model), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
