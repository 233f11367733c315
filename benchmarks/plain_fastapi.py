"""The baseline: what a studio would write without a platform.

One uvicorn process, ONNX Runtime in-process, the same request and response
models and the same encode/decode as gameserve. No batching, no routing, no
scaling beyond this process. With ``--workers N`` uvicorn runs N such
processes on one socket: a studio's simplest way to use every core.

    python -m benchmarks.plain_fastapi --model npc.onnx --port 8100 [--workers 2]
"""

from __future__ import annotations

import argparse
import os
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


MODEL_VARIABLE = "PLAIN_FASTAPI_MODEL"  # how uvicorn's worker processes learn the model


def app_in_worker() -> FastAPI:
    """The app factory each of uvicorn's workers calls."""
    return create_app(Path(os.environ[MODEL_VARIABLE]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.workers == 1:
        uvicorn.run(create_app(args.model), host="127.0.0.1", port=args.port, log_level="warning")
        return
    os.environ[MODEL_VARIABLE] = str(args.model.resolve())
    uvicorn.run(
        f"{__name__}:app_in_worker",
        factory=True,
        workers=args.workers,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
