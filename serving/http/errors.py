"""One handler turns every error into the error body of the protocol the route speaks.

The game API answers ``{"error": {"code", "message"}}``. The Open Inference
Protocol routes (``/v2``) answer Triton's ``{"error": "<message>"}``: that is
the body tritonclient parses (it calls ``str`` on what it finds there, and
crashes on an object).
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from models.errors import (
    DeadlineExceededError,
    GameserveError,
    InvalidInputError,
    ModelNotReadyError,
    OverloadedError,
    UnauthorizedError,
)
from serving.http.json_body import describe

logger = logging.getLogger(__name__)

V2_PREFIX = "/v2"


def speaks_v2(path: str) -> bool:
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def error_body(path: str, code: str, message: str) -> dict[str, Any]:
    """Triton's body on the v2 routes, the game API's everywhere else."""
    if speaks_v2(path):
        return {"error": message}
    return {"error": {"code": code, "message": message}}


def error_response(error: GameserveError, path: str = "") -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(error, OverloadedError):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    if isinstance(error, UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    body = error_body(path, error.code, error.message)
    return JSONResponse(body, status_code=error.status, headers=headers or None)


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


def response_for(exc: Exception, path: str = "") -> JSONResponse:
    """The error body and status for any exception a route raises at ``path``."""
    if isinstance(exc, GameserveError):
        report(exc, path)
        return error_response(exc, path)
    if isinstance(exc, RequestValidationError):
        return error_response(InvalidInputError(describe(list(exc.errors()))), path)
    if isinstance(exc, HTTPException):
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        body = error_body(path, code, str(exc.detail))
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
    logger.error("%s: unhandled error", path, exc_info=exc)
    return error_response(GameserveError("internal error; see the server log"), path)


def install_error_handlers(app: FastAPI) -> None:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return response_for(exc, request.url.path)

    for kind in (GameserveError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(kind, handler)
