"""One handler turns every error into ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging
import math
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from models.errors import GameserveError, InvalidInputError, OverloadedError
from serving.http.json_body import describe

logger = logging.getLogger(__name__)


def error_response(error: GameserveError) -> JSONResponse:
    headers = None
    if isinstance(error, OverloadedError):
        headers = {"Retry-After": str(max(1, math.ceil(error.retry_after_s)))}
    return JSONResponse(error.to_dict(), status_code=error.status, headers=headers)


def response_for(exc: Exception) -> JSONResponse:
    """The error body and status for any exception a route raises."""
    if isinstance(exc, GameserveError):
        if exc.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            logger.warning("%s: %s", exc.code, exc.message)
        return error_response(exc)
    if isinstance(exc, RequestValidationError):
        return error_response(InvalidInputError(describe(list(exc.errors()))))
    if isinstance(exc, HTTPException):
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        body = {"error": {"code": code, "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
    logger.exception("unhandled error", exc_info=exc)
    return error_response(GameserveError("internal error; see the server log"))


def install_error_handlers(app: FastAPI) -> None:
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return response_for(exc)

    for kind in (GameserveError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(kind, handler)
