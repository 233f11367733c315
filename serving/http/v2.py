"""The Open Inference Protocol v2 over HTTP (KServe / Triton REST), as tritonclient speaks it.

The handlers are the protocol's (``serving/protocol/v2.py``); routes convert JSON.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request, Response

from models.errors import ModelNotReadyError
from serving.dataplane.plane import DataPlane
from serving.http.game_api import routing_key
from serving.http.guard import admit
from serving.http.v2_codec import HEADER_LENGTH, encode_response, parse_request
from serving.protocol.tensors import V2Request
from serving.protocol.v2 import V2Handlers


def _path_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _infer_doc(*path_parameters: str) -> dict[str, Any]:
    """The infer route's OpenAPI: it reads its path and body itself (serving/http/direct.py).

    The body is JSON, or JSON followed by raw tensor bytes.
    """
    return {
        "parameters": [_path_parameter(name) for name in path_parameters],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
    }


def v2_router(plane: DataPlane) -> APIRouter:
    handlers = V2Handlers(plane)
    router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])

    @router.get("")
    async def server_metadata() -> dict[str, Any]:
        return asdict(handlers.server_metadata())

    @router.get("/health/live")
    async def live() -> dict[str, bool]:
        return {"live": handlers.live()}

    @router.get("/health/ready")
    async def ready() -> dict[str, bool]:
        unready = await handlers.unready()
        if unready:
            raise ModelNotReadyError(f"model {unready[0]!r} is not ready")
        return {"ready": True}

    @router.get("/models/{model_name}")
    @router.get("/models/{model_name}/versions/{model_version}")
    async def model_metadata(model_name: str, model_version: str | None = None) -> dict[str, Any]:
        return asdict(await handlers.model_metadata(model_name, model_version))

    @router.get("/models/{model_name}/ready")
    @router.get("/models/{model_name}/versions/{model_version}/ready")
    async def model_ready(model_name: str, model_version: str | None = None) -> dict[str, Any]:
        status = await handlers.model_status(model_name, model_version)
        if not status.ready:
            raise ModelNotReadyError(f"model {model_name!r} is not ready")
        return {"name": model_name, "ready": True}

    @router.post("/models/{model_name}/infer", openapi_extra=_infer_doc("model_name"))
    @router.post(
        "/models/{model_name}/versions/{model_version}/infer",
        openapi_extra=_infer_doc("model_name", "model_version"),
    )
    async def infer(request: Request) -> Response:
        model_name: str = request.path_params["model_name"]
        model_version: str | None = request.path_params.get("model_version")

        async def decode() -> V2Request:
            # The raw body: tritonclient sends binary tensors without a Content-Type.
            return parse_request(await request.body(), request.headers.get(HEADER_LENGTH))

        parsed, answer = await handlers.infer(
            model_name,
            admit(plane, request, model_name, "v2"),
            decode,
            version=model_version,
            routing_key=routing_key(request),
        )
        body, headers = encode_response(
            model_name, answer.version, parsed, answer.outputs, answer.provenance()
        )
        return Response(content=body, headers=headers)

    return router
