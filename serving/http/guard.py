"""The ingress's front door: body size, API key and scope, rate, and load, in that order.

Everything here runs before a body is read or a model is touched, so a request
that is refused costs microseconds: an oversized ``Content-Length`` is a 413
before its first byte is read, a chunked body is counted as it arrives, a
missing or wrong key is a 401, a key without the route's scope a 403, a key
over its rate a 429, and a replica already working on ``max_in_flight``
requests answers 503 with ``Retry-After`` instead of queueing the request
behind the others. Inference requests are bounded by class instead, by the
data plane's admission (``serving/dataplane/admission.py``), which sheds
best-effort work first. The guard stamps each request's receipt: deadlines
(``X-Deadline-Ms``) count from it, or from the edge's earlier stamp
(``X-Request-Start``, set by HAProxy) where there is one. It also leaves the
highest class the caller's key may ask for (``X-Priority``).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.errors import (
    GameserveError,
    InvalidInputError,
    OverloadedError,
    PayloadTooLargeError,
)
from serving.dataplane.admission import Ticket
from serving.dataplane.game_time import STAMP_HEADER, Call, Protocol, edge_received
from serving.dataplane.plane import DataPlane
from serving.http.errors import error_response
from serving.protocol.access import Access
from serving.protocol.keys import Scope as KeyScope
from serving.protocol.terms import admit_by_headers, bearer_token

# Where the guard leaves the moment it received a request, in the ASGI scope's
# state (Starlette's ``request.state``), as time.monotonic().
RECEIVED = "gameserve_received"
# ... and the highest priority class the caller's key allows (None: the family's own).
CEILING = "gameserve_priority_ceiling"

# Load balancers and probes call these without a key.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
ADMIN_PREFIX = "/v1/admin"


def required_scope(method: str, path: str) -> KeyScope | None:
    """The scope a route needs; None for the open health routes."""
    if path in OPEN_PATHS:
        return None
    if path.startswith(ADMIN_PREFIX):
        return "admin"
    if method == "POST" and (
        path.startswith("/v1/") or (path.startswith("/v2/models/") and path.endswith("/infer"))
    ):
        return "infer"
    if method in ("GET", "HEAD"):
        return "read"
    return "admin"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def bearer(scope: Scope) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header."""
    return bearer_token(_header(scope, b"authorization"))


class Guard:
    """ASGI middleware in front of the whole app; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        access: Access,
        max_body_bytes: int,
        max_in_flight: int,
        retry_after_s: float = 1.0,
    ) -> None:
        self.app = app
        self.access = access
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state[RECEIVED] = edge_received(
            _header(scope, STAMP_HEADER.encode()), time.monotonic(), time.time()
        )
        try:
            counted = self._admit(scope, state)
        except GameserveError as exc:
            await error_response(exc, scope["path"])(scope, receive, send)
            return
        if counted:
            receive = self._bounded(receive)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _admit(self, scope: Scope, state: dict[str, Any]) -> bool:
        """Refuse what must be refused; True when the body must be counted as it comes."""
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise InvalidInputError(f"content-length: not an integer: {length!r}") from None
            self._check_size(declared)
        needed = required_scope(scope["method"], scope["path"])
        if needed is None:
            return length is None
        state[CEILING] = self.access.check(bearer(scope), needed)
        if needed != "infer" and self.in_flight >= self.max_in_flight:
            raise OverloadedError(
                f"this replica is working on {self.in_flight} requests; retry shortly",
                retry_after_s=self.retry_after_s,
            )
        return length is None

    def _check_size(self, size: int) -> None:
        if size > self.max_body_bytes:
            raise PayloadTooLargeError(
                f"body: {size} bytes exceed the limit of {self.max_body_bytes}"
            )

    def _bounded(self, receive: Receive) -> Receive:
        """``receive`` that counts a body of unknown length and stops it at the limit."""
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message: dict[str, Any] = dict(await receive())
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                self._check_size(seen)
            return message

        return counted


# A request's game-time terms from HTTP, for the routes that run models: the header
# lookups are the protocol's (serving/protocol/terms.py); these add what only HTTP
# has, the edge's receipt stamp and the key's ceiling the guard left in the scope.
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
