"""The Open Inference Protocol v2 (KServe / Triton REST), as tritonclient speaks it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from fastapi import APIRouter, Request, Response

from models.contract import TensorSpec
from models.errors import ModelNotReadyError
from serving.dataplane.plane import DataPlane
from serving.dataplane.v2_inference import V2Request, infer_v2
from serving.http.game_api import routing_key
from serving.http.game_time import admit
from serving.http.v2_codec import HEADER_LENGTH, datatype_of, encode_response, parse_request


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


def server_version() -> str:
    try:
        return package_version("gameserve")
    except PackageNotFoundError:
        return "unknown"


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "datatype": datatype_of(spec.dtype),
        "shape": [-1 if d is None else d for d in spec.shape],
    }


def v2_router(plane: DataPlane) -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])

    @router.get("")
    async def server_metadata() -> dict[str, Any]:
        return {
            "name": "gameserve",
            "version": server_version(),
            "extensions": ["binary_tensor_data"],
        }

    @router.get("/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/health/ready")
    async def ready() -> dict[str, bool]:
        unready = await plane.unready()
        if unready:
            raise ModelNotReadyError(f"model {unready[0]!r} is not ready")
        return {"ready": True}

    @router.get("/models/{model_name}")
    @router.get("/models/{model_name}/versions/{model_version}")
    async def model_metadata(model_name: str, model_version: str | None = None) -> dict[str, Any]:
        family = plane.family(model_name)
        if model_version is None:
            status = await plane.status(model_name)
        else:
            status = await plane.require_version(model_name, model_version)
        return {
            "name": model_name,
            "versions": [status.version] if status.version else [],
            "platform": "onnxruntime_onnx",
            "inputs": [tensor_metadata(s) for s in family.contract.inputs],
            "outputs": [tensor_metadata(s) for s in family.contract.outputs],
        }

    @router.get("/models/{model_name}/ready")
    @router.get("/models/{model_name}/versions/{model_version}/ready")
    async def model_ready(model_name: str, model_version: str | None = None) -> dict[str, Any]:
        if model_version is None:
            status = await plane.status(model_name)
        else:
            status = await plane.require_version(model_name, model_version)
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

        parsed, answer = await infer_v2(
            plane,
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
