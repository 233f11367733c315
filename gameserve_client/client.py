"""Sync and async clients of the game API: pooled connections, deadlines, polite retries.

>>> with Client("http://127.0.0.1:8000", api_key) as client:
...     result = client.call(NPC_ACT, NpcActRequest(npcs=[...]), deadline_ms=20, routing_key=match)

Each call sends its deadline (``X-Deadline-Ms``, the time left of it on a
retry), its priority class (``X-Priority``) and a routing key
(``X-Session-Id``) that keeps one match on one version during a canary. The
answer is the route's typed model; ``answer.source`` says whether the model or
the family's fallback gave it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

import httpx2 as httpx
from pydantic import BaseModel

from gameserve_client.errors import ApiError, ConnectionFailedError
from gameserve_client.retry import RetryPolicy
from gameserve_client.route import Route

Res = TypeVar("Res", bound=BaseModel)
# A dropped or refused connection is retried; a timeout is not (the server may be working on it).
RETRIED = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
# ... and of those, a connection that was open and closed under the call: resent at once.
DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


@dataclass(frozen=True)
class Answered(Generic[Res]):
    """The call is done: its typed answer."""

    answer: Res


class _Call(Generic[Res]):
    """One call's headers, deadline and retries, without I/O: both clients drive it.

    ``attempt()`` gives the headers and timeout of the next try; ``settle()``
    takes what came back and gives the answer, the seconds to wait before the
    next try, or raises the call's failure.
    """

    def __init__(
        self,
        shared: _Shared,
        route: Route[Any, Res],
        request: BaseModel,
        deadline_ms: float | None,
        headers: dict[str, str],
    ) -> None:
        self.shared, self.route, self.deadline_ms = shared, route, deadline_ms
        self.body = json.dumps(request.model_dump(mode="json", exclude_unset=True)).encode()
        self.headers = {**shared.headers, **headers, "Content-Type": "application/json"}
        self.started = time.monotonic()
        self.tries = 0

    def _remaining_s(self) -> float | None:
        if self.deadline_ms is None:
            return None
        return self.deadline_ms / 1000 - (time.monotonic() - self.started)

    def attempt(self) -> tuple[dict[str, str], float]:
        """(headers, timeout in seconds) of the next try."""
        remaining = self._remaining_s()
        if remaining is None or self.deadline_ms is None:
            return self.headers, self.shared.timeout_s
        if self.tries == 0:  # the whole budget is the server's: it answers by then
            remaining = self.deadline_ms / 1000
        elif remaining <= 0:
            raise ApiError(504, "deadline_exceeded", f"the {self.deadline_ms:g} ms deadline passed")
        headers = {**self.headers, "X-Deadline-Ms": f"{remaining * 1000:.3f}"}
        # The server answers by the deadline (a fallback at worst): slack for the wire.
        return headers, min(self.shared.timeout_s, remaining + 0.25)

    def settle(self, outcome: httpx.Response | Exception) -> Answered[Res] | float:
        if isinstance(outcome, httpx.Response) and outcome.status_code == 200:
            return Answered(self.route.answer.model_validate_json(outcome.content))
        response = outcome if isinstance(outcome, httpx.Response) else None
        failure = _error(response) if response is not None else ConnectionFailedError(repr(outcome))
        wait = self.shared.retry.delay_s(
            self.tries,
            None if response is None else response.status_code,
            None if response is None else response.headers.get("retry-after"),
            self._remaining_s(),
            self.shared.rng,
            dropped=isinstance(outcome, DROPPED),
        )
        if wait is None:
            raise failure
        self.tries += 1
        return wait


class _Shared:
    """What every call of one client shares: its key, retry policy, timeout and jitter."""

    def __init__(self, api_key: str | None, retry: RetryPolicy | None, timeout_s: float) -> None:
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self.rng = random.Random()

    def call(
        self,
        route: Route[Any, Res],
        request: BaseModel,
        deadline_ms: float | None,
        routing_key: str | None,
        priority: str | None,
    ) -> _Call[Res]:
        headers = {}
        if routing_key is not None:
            headers["X-Session-Id"] = routing_key
        if priority is not None:
            headers["X-Priority"] = priority
        return _Call(self, route, request, deadline_ms, headers)


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
        error = body["error"]
        code, message = (
            (error["code"], error["message"]) if isinstance(error, dict) else ("", error)
        )
    except (ValueError, KeyError, TypeError):
        code, message = "", response.text[:300]
    retry_after = response.headers.get("retry-after")
    return ApiError(
        response.status_code,
        str(code) or f"http_{response.status_code}",
        str(message),
        float(retry_after) if retry_after and retry_after.isdigit() else None,
    )


class Client:
    """Blocking calls over one pooled connection set; use it from one thread or guard it."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float = 10.0,
        max_connections: int = 16,
    ) -> None:
        self._shared = _Shared(api_key, retry, timeout_s)
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.Client(base_url=url, limits=limits)

    def call(
        self,
        route: Route[Any, Res],
        request: BaseModel,
        *,
        deadline_ms: float | None = None,
        routing_key: str | None = None,
        priority: str | None = None,
    ) -> Res:
        """``request`` on ``route``: its typed answer, or ApiError once retries are spent."""
        call = self._shared.call(route, request, deadline_ms, routing_key, priority)
        while True:
            headers, timeout_s = call.attempt()
            try:
                outcome: httpx.Response | Exception = self._http.post(
                    route.path, content=call.body, headers=headers, timeout=timeout_s
                )
            except RETRIED as exc:
                outcome = exc
            settled = call.settle(outcome)
            if isinstance(settled, Answered):
                return settled.answer
            time.sleep(settled)

    def get(self, path: str) -> Any:
        """A read route (``/v1/models``...), as parsed JSON."""
        response = self._http.get(
            path, headers=self._shared.headers, timeout=self._shared.timeout_s
        )
        if response.status_code != 200:
            raise _error(response)
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient:
    """The same calls for an asyncio game server or tool: many at once over one pool."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        self._shared = _Shared(api_key, retry, timeout_s)
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.AsyncClient(base_url=url, limits=limits)

    async def call(
        self,
        route: Route[Any, Res],
        request: BaseModel,
        *,
        deadline_ms: float | None = None,
        routing_key: str | None = None,
        priority: str | None = None,
    ) -> Res:
        """``request`` on ``route``: its typed answer, or ApiError once retries are spent."""
        call = self._shared.call(route, request, deadline_ms, routing_key, priority)
        while True:
            headers, timeout_s = call.attempt()
            try:
                outcome: httpx.Response | Exception = await self._http.post(
                    route.path, content=call.body, headers=headers, timeout=timeout_s
                )
            except RETRIED as exc:
                outcome = exc
            settled = call.settle(outcome)
            if isinstance(settled, Answered):
                return settled.answer
            await asyncio.sleep(settled)

    async def get(self, path: str) -> Any:
        response = await self._http.get(
            path, headers=self._shared.headers, timeout=self._shared.timeout_s
        )
        if response.status_code != 200:
            raise _error(response)
        return response.json()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()
