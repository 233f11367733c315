"""A call's terms from its headers: key, routing key, deadline and class.

HTTP headers and gRPC metadata (both lower-case here) carry the same names, so
one lookup serves both transports: ``authorization: Bearer <key>``,
``x-session-id`` / ``x-player-id`` for sticky canary routing, and
``x-deadline-ms`` / ``x-priority`` for admission. A deadline the transport
carries itself (gRPC's) is one more budget: the earliest deadline wins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

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

ROUTING_HEADERS = ("x-session-id", "x-player-id")


def bearer_token(value: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` value."""
    if value is None:
        return None
    kind, _, token = value.partition(" ")
    return token.strip() if kind.lower() == "bearer" else None


def routing_key_of(headers: Mapping[str, str]) -> str | None:
    """The routing key among ``headers``, if any."""
    return next((headers[h] for h in ROUTING_HEADERS if headers.get(h)), None)


def admit_by_headers(
    plane: DataPlane,
    headers: Mapping[str, str],
    name: str,
    protocol: Protocol,
    received: float,
    transport_budget_ms: float | None = None,
    ceiling: Priority | None = None,
) -> tuple[Call, Ticket]:
    """The call's terms and its admission ticket; raises what a shed call gets.

    ``ceiling`` is the highest class the caller's key may ask for (``Access.check``)."""
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
