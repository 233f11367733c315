"""A request's game-time terms from HTTP: ``X-Deadline-Ms`` and ``X-Priority``.

Both routes that run models (the game API, v2 ``infer``) settle these before
reading the body, so a request of a class being shed costs no parsing.
"""

from __future__ import annotations

import time

from starlette.requests import Request

from serving.dataplane.admission import Ticket
from serving.dataplane.game_time import Call, Protocol, parse_budget_ms
from serving.dataplane.plane import DataPlane
from serving.http.guard import RECEIVED

DEADLINE_HEADER = "x-deadline-ms"
PRIORITY_HEADER = "x-priority"


def received(request: Request) -> float:
    """When the guard received ``request`` (now, for an app without the guard)."""
    stamp = request.scope.get("state", {}).get(RECEIVED)
    return time.monotonic() if stamp is None else float(stamp)


def admit(plane: DataPlane, request: Request, name: str, protocol: Protocol) -> tuple[Call, Ticket]:
    """The request's terms and its admission ticket; raises what a shed request gets."""
    headers = request.headers
    return plane.admit(
        name,
        protocol,
        received=received(request),
        deadline_ms=parse_budget_ms(headers.get(DEADLINE_HEADER), DEADLINE_HEADER),
        priority=headers.get(PRIORITY_HEADER),
    )
