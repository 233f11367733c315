"""One handler turns every error into the error body of the protocol the route speaks.

The game API answers ``{"error": {"code", "message"}}``, the Open Inference
Protocol routes (``/v2``) Triton's body: the table is the protocol's
(``serving/protocol/errors.py``); this adds FastAPI's own errors and the path.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from models.errors import GameserveError, InvalidInputError
from serving.http.json_body import describe
from serving.protocol import errors as protocol_errors
from serving.protocol.errors import http_headers, report

logger = logging.getLogger(__name__)

V2_PREFIX = "/v2"


def speaks_v2(path: str) -> bool:
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def error_body(path: str, code: str, message: str) -> dict[str, Any]:
    """Triton's body on the v2 routes, the game API's everywhere else."""
    return protocol_errors.error_body(code, message, triton=speaks_v2(path))


def error_response(error: GameserveError, path: str = "") -> JSONResponse:
    body = error_body(path, error.code, error.message)
    headers = http_headers(error)
    return JSONResponse(body, status_code=error.status, headers=headers or None)


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
