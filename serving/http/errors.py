"""One handler turns every error into ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from models.errors import GameserveError, InvalidInputError, OverloadedError

logger = logging.getLogger(__name__)


def error_response(error: GameserveError) -> JSONResponse:
    headers = None
    if isinstance(error, OverloadedError):
        headers = {"Retry-After": str(max(1, math.ceil(error.retry_after_s)))}
    return JSONResponse(error.to_dict(), status_code=error.status, headers=headers)


def field_path(location: Sequence[int | str]) -> str:
    """``("body", "npcs", 0, "health")`` → ``npcs[0].health``."""
    path = ""
    for part in location:
        if part == "body" and not path:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def install_error_handlers(app: FastAPI) -> None:
    async def on_gameserve_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GameserveError)
        if exc.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            logger.warning("%s: %s", exc.code, exc.message)
        return error_response(exc)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [f"{field_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        return error_response(InvalidInputError("; ".join(problems[:5]) + more))

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        body = {"error": {"code": code, "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        return error_response(GameserveError("internal error; see the server log"))

    app.add_exception_handler(GameserveError, on_gameserve_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
