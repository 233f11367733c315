"""gameserve_client against a real server on a loopback socket: typed answers, deadlines,
and retries that honour Retry-After on 429 and 503."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gameserve_client import (
    NPC_ACT,
    PERSONALIZATION_RANK,
    ApiError,
    AsyncClient,
    Client,
    ConnectionFailedError,
    NpcActRequest,
    RankRequest,
    RetryPolicy,
)
from serving.control.admin_server import AdminServer
from serving.dataplane.admission import Admission, AdmissionBounds
from serving.dataplane.backend import LocalBackend
from serving.dataplane.plane import DataPlane
from serving.http.app import create_app
from serving.protocol.keys import KeyStore
from tests.asgi.conftest import (
    FALLBACK_DEADLINE_MS,
    MAX_ROWS,
    calm_admission,
    fallback_timing,
    settings_with_keys,
)
from tests.payloads import npc_tick, rank_request

SHED_EVERYTHING = AdmissionBounds(best_effort_share=0.0, normal_lag_ms=1e6)


@pytest.fixture
def plane(backends: dict[str, LocalBackend]) -> DataPlane:
    return DataPlane(backends, max_rows_per_request=MAX_ROWS, admission=Admission(SHED_EVERYTHING))


@pytest.fixture
def server(plane: DataPlane, key_file: Path) -> Iterator[str]:
    with AdminServer(create_app(plane, settings_with_keys(key_file)), "127.0.0.1", 0) as running:
        yield running.url


def test_typed_answers_with_a_routing_key_and_a_deadline(
    backends: dict[str, LocalBackend], key_file: Path, api_keys: dict[str, str]
) -> None:
    plane = DataPlane(
        backends, MAX_ROWS, admission=Admission(SHED_EVERYTHING), timing=fallback_timing
    )
    app = create_app(plane, settings_with_keys(key_file))
    with (
        AdminServer(app, "127.0.0.1", 0) as running,
        Client(running.url, api_keys["ops"]) as client,
    ):
        answer = client.call(
            NPC_ACT, NpcActRequest.model_validate(npc_tick(3)), deadline_ms=5_000, routing_key="m-1"
        )
        assert [d.npc_id for d in answer.decisions] == ["npc-0", "npc-1", "npc-2"]
        assert (answer.model.version, answer.source) == ("1", "model")
        # A deadline no model can meet: the server's fallback answers, typed the same.
        late = client.call(
            NPC_ACT, NpcActRequest.model_validate(npc_tick(1)), deadline_ms=FALLBACK_DEADLINE_MS
        )
        assert (late.source, late.fallback_reason, late.model.version) == (
            "fallback",
            "deadline",
            None,
        )
        assert {m["name"] for m in client.get("/v1/models")["models"]} >= {"npc-behavior"}


def test_a_429_is_retried_after_its_retry_after(
    server: str, key_file: Path, api_keys: dict[str, str]
) -> None:
    slow_key = KeyStore(key_file).create("one-per-second", ["infer"], rate_per_s=1.0, burst=1)
    request = NpcActRequest.model_validate(npc_tick(1))
    with Client(server, slow_key) as client:
        client.call(NPC_ACT, request)
        started = time.monotonic()
        # over the rate: 429, Retry-After: 1; patient, so that a busy machine's model
        # answers the retry (on the NPC's own 20 ms a fallback may, which is not the point)
        answer = client.call(NPC_ACT, request, deadline_ms=10_000)
        assert time.monotonic() - started >= 1.0
        assert answer.source == "model"


def test_a_503_is_retried_until_the_server_takes_it(
    server: str, plane: DataPlane, api_keys: dict[str, str]
) -> None:
    request = RankRequest.model_validate(rank_request(8, k=3))
    # The replica sheds best-effort work for a moment, then has room again: bounds that
    # shed by in-flight counts only (calm_admission's), or a busy CI machine's late loop
    # timer sheds the retry too (seen once: 2 sheds, not 1).
    room = calm_admission().bounds
    calm = threading.Timer(0.3, lambda: setattr(plane.admission, "bounds", room))
    calm.start()
    try:
        with Client(server, api_keys["ops"]) as client:
            started = time.monotonic()
            ranked = client.call(PERSONALIZATION_RANK, request)
            assert time.monotonic() - started >= 1.0  # the server's Retry-After, not the backoff
    finally:
        calm.cancel()
    assert len(ranked.items) == 3
    assert plane.counters.family("personalization").shed["best_effort"] == 1


def test_retries_end_with_the_servers_error_or_at_the_deadline(
    server: str, plane: DataPlane, api_keys: dict[str, str]
) -> None:
    request = RankRequest.model_validate(rank_request(8, k=3))
    quick = RetryPolicy(retries=2, max_retry_after_s=1.0)
    with Client(server, api_keys["ops"], retry=quick) as client:
        with pytest.raises(ApiError) as refused:
            client.call(PERSONALIZATION_RANK, request)
        assert (refused.value.status, refused.value.code) == (503, "overloaded")
        assert plane.counters.family("personalization").shed["best_effort"] == 3  # 1 + 2 retries
        started = time.monotonic()
        with pytest.raises(ApiError, match="overloaded"):
            client.call(PERSONALIZATION_RANK, request, deadline_ms=200)  # no time to wait 1 s
        assert time.monotonic() - started < 0.9
    with Client(server, api_keys["read"]) as reader, pytest.raises(ApiError) as refused:
        reader.call(NPC_ACT, NpcActRequest.model_validate(npc_tick(1)))  # never retried
    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    assert "infer" in refused.value.message


def test_an_unreachable_server_fails_after_its_retries() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        with (
            Client(f"http://127.0.0.1:{port}", "key", retry=RetryPolicy(retries=2)) as client,
            pytest.raises(ConnectionFailedError),
        ):
            client.call(NPC_ACT, NpcActRequest.model_validate(npc_tick(1)))


async def _message(reader: asyncio.StreamReader) -> bytes:
    """One whole HTTP/1.1 message (its head, then Content-Length bytes); b"" at the end."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    except asyncio.IncompleteReadError:
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


class _ReloadingEdge:
    """A loopback TCP relay in front of ``upstream`` that, like HAProxy reloading,
    closes a reused keep-alive connection when its next request arrives, before a
    byte of an answer; fresh connections are relayed whole."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.dropped = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        async def start() -> None:
            self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
            self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(*self.upstream)
        answered = False
        try:
            while request := await _message(client_r):
                if answered:  # the connection's second request: dropped with no byte
                    self.dropped += 1
                    return
                up_w.write(request)
                await up_w.drain()
                client_w.write(await _message(up_r))
                await client_w.drain()
                answered = True
        finally:
            for writer in (client_w, up_w):
                writer.close()

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            relays = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for relay in relays:
                relay.cancel()
            await asyncio.gather(*relays, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_a_reused_connection_closed_before_any_byte_is_resent_at_once(
    server: str, api_keys: dict[str, str]
) -> None:
    """The one request in 6,000 lost as HAProxy reloads (issue 29): a backoff long
    enough to outlast the deadline, so only an immediate resend answers in time."""
    edge = _ReloadingEdge(server)
    try:
        slow = RetryPolicy(retries=1, backoff_s=30.0, max_backoff_s=30.0)
        with Client(edge.url, api_keys["ops"], retry=slow) as client:
            for i in range(3):
                tick = NpcActRequest.model_validate(npc_tick(1, f"m{i}"))
                answer = client.call(NPC_ACT, tick, deadline_ms=5000)
                assert answer.decisions[0].npc_id == f"m{i}-0"
        assert edge.dropped == 2  # the 2nd and 3rd calls each met a dropped connection
    finally:
        edge.close()


def test_the_async_client_runs_calls_at_once(server: str, api_keys: dict[str, str]) -> None:
    async def tick() -> list[str]:
        async with AsyncClient(server, api_keys["ops"]) as client:
            answers = await asyncio.gather(
                *(
                    client.call(NPC_ACT, NpcActRequest.model_validate(npc_tick(2, f"m{i}")))
                    for i in range(20)
                )
            )
        return [a.decisions[0].npc_id for a in answers]

    assert asyncio.run(tick()) == [f"m{i}-0" for i in range(20)]
