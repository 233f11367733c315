"""A request's game-time terms from HTTP: ``X-Deadline-Ms`` and ``X-Priority``.

Both routes that run models (the game API, v2 ``infer``) settle these before
reading the body, so a request of a class being shed, or one whose budget was
spent in the queues before it, costs no parsing. The deadline counts from the
edge's stamp (the guard reads ``X-Request-Start``), and ``X-Priority`` is
bounded by the caller's key (the guard leaves its ceiling in the scope).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from starlette.requests import Request

from serving.dataplane.admission import Ticket
from serving.dataplane.game_time import (
    DEADLINE_HEADER,
    PRIORITY_HEADER,
    Call,
    Priority,
    Protocol,
    parse_budget_ms,
)
from serving.dataplane.plane import DataPlane
from serving.http.guard import CEILING, RECEIVED


def received(request: Request) -> float:
    """When the edge received ``request``, as the guard found (now, without the guard)."""
    stamp = request.scope.get("state", {}).get(RECEIVED)
    return time.monotonic() if stamp is None else float(stamp)


def admit(plane: DataPlane, request: Request, name: str, protocol: Protocol) -> tuple[Call, Ticket]:
    """The request's terms and its admission ticket; raises what a shed request gets."""
    state = request.scope.get("state", {})
    return admit_by_headers(
        plane, request.headers, name, protocol, received(request), ceiling=state.get(CEILING)
    )


def admit_by_headers(
    plane: DataPlane,
    headers: Mapping[str, str],
    name: str,
    protocol: Protocol,
    received: float,
    transport_budget_ms: float | None = None,
    ceiling: Priority | None = None,
) -> tuple[Call, Ticket]:
    """``admit`` from HTTP headers or gRPC metadata (lower-case names). A deadline the
    transport carries (gRPC's) is one more budget: the earliest deadline wins."""
    deadline_ms = parse_budget_ms(headers.get(DEADLINE_HEADER), DEADLINE_HEADER)
    if transport_budget_ms is not None:
        deadline_ms = min(deadline_ms or math.inf, transport_budget_ms)
    return plane.admit(
        name,
        protocol,
        received=received,
        deadline_ms=deadline_ms,
        priority=headers.get(PRIORITY_HEADER),
        ceiling=ceiling,
    )
