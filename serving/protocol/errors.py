"""How each protocol says an error: the one table for HTTP, Triton's body and gRPC.

A ``GameserveError`` carries its HTTP status and a stable code. From those:
the game API answers ``{"error": {"code", "message"}}``; the Open Inference
Protocol answers Triton's ``{"error": "<message>"}`` over HTTP (tritonclient
calls ``str`` on what it finds there, and crashes on an object) and a gRPC
status with the message over gRPC. An overloaded answer says when to retry in
both (``Retry-After``); the game API's code travels to gRPC callers as
trailing metadata. The transports only convert; nothing here imports one.
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any

from models.errors import (
    DeadlineExceededError,
    GameserveError,
    ModelNotReadyError,
    OverloadedError,
    UnauthorizedError,
)

logger = logging.getLogger(__name__)

ERROR_CODE_METADATA = "gameserve-error-code"  # gRPC: the game API's code for the same error

# By HTTP status, the gRPC status code's name (``grpc.StatusCode[name]``); INTERNAL otherwise.
_GRPC_STATUS: dict[int, str] = {
    HTTPStatus.BAD_REQUEST: "INVALID_ARGUMENT",
    HTTPStatus.UNPROCESSABLE_ENTITY: "INVALID_ARGUMENT",
    HTTPStatus.UNAUTHORIZED: "UNAUTHENTICATED",
    HTTPStatus.FORBIDDEN: "PERMISSION_DENIED",
    HTTPStatus.NOT_FOUND: "NOT_FOUND",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "RESOURCE_EXHAUSTED",
    HTTPStatus.TOO_MANY_REQUESTS: "RESOURCE_EXHAUSTED",
    HTTPStatus.SERVICE_UNAVAILABLE: "UNAVAILABLE",
    HTTPStatus.GATEWAY_TIMEOUT: "DEADLINE_EXCEEDED",
}


def error_body(code: str, message: str, *, triton: bool) -> dict[str, Any]:
    """Triton's body for the v2 protocol over HTTP, the game API's otherwise."""
    if triton:
        return {"error": message}
    return {"error": {"code": code, "message": message}}


def retry_after_s(error: GameserveError) -> int | None:
    """Whole seconds an overloaded caller should wait (at least 1); None for other errors."""
    if isinstance(error, OverloadedError):
        return max(1, math.ceil(error.retry_after_s))
    return None


def http_headers(error: GameserveError) -> dict[str, str]:
    headers: dict[str, str] = {}
    retry = retry_after_s(error)
    if retry is not None:
        headers["Retry-After"] = str(retry)
    if isinstance(error, UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    return headers


def grpc_status_name(error: GameserveError) -> str:
    return _GRPC_STATUS.get(error.status, "INTERNAL")


def grpc_trailers(error: GameserveError) -> tuple[tuple[str, str], ...]:
    trailers = [(ERROR_CODE_METADATA, error.code)]
    retry = retry_after_s(error)
    if retry is not None:
        trailers.append(("retry-after", str(retry)))
    return tuple(trailers)


def report(exc: GameserveError, where: str) -> None:
    """Log an error answered at ``where`` (a path, a gRPC method) as an operator needs it."""
    if isinstance(exc, ModelNotReadyError):
        logger.warning("%s %s: %s", where, exc.code, exc.message)
    elif exc.status >= HTTPStatus.INTERNAL_SERVER_ERROR and not isinstance(
        exc, OverloadedError | DeadlineExceededError
    ):
        # With its traceback: a 5xx is a bug or a broken model until shown otherwise.
        # Shed requests (503 overloaded) and missed deadlines (504) are deliberate
        # answers, counted (/v1/models) rather than logged one by one; not-ready is
        # a state a probe asks about, logged without a traceback.
        logger.error("%s %s: %s", where, exc.code, exc.message, exc_info=exc)
