"""The app on the ingress replica's own HTTP server: a real uvicorn on a loopback port.

Two servers bind one port (SO_REUSEPORT), as the ingress replicas of a node do;
requests go through real sockets to the same guarded app Serve would run.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from serving.dataplane.backend import LocalBackend
from serving.dataplane.plane import DataPlane
from serving.http.app import create_app
from serving.http.listener import HEALTH_PATH, HttpListener, ListenerUnavailableError
from serving.runtime.ports import free_port
from tests.asgi.conftest import MAX_ROWS, calm_admission, settings_with_keys
from tests.asgi.test_grpc import _Slow
from tests.payloads import npc_tick


@contextlib.contextmanager
def _loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        for task in asyncio.all_tasks(loop):  # the admission's loop-lag probe
            loop.call_soon_threadsafe(task.cancel)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _listen(
    loop: asyncio.AbstractEventLoop, plane: DataPlane, key_file: Path, port: int
) -> HttpListener:
    async def start() -> HttpListener:
        listener = HttpListener(create_app(plane, settings_with_keys(key_file)), "127.0.0.1", port)
        await listener.start()
        return listener

    return asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)


def _stop(loop: asyncio.AbstractEventLoop, listener: HttpListener, drain_s: float) -> None:
    asyncio.run_coroutine_threadsafe(listener.stop(drain_s), loop).result(timeout=30)


def test_replicas_share_the_port_and_serve_the_guarded_app(
    backends: dict[str, LocalBackend], key_file: Path, api_keys: dict[str, str]
) -> None:
    plane = DataPlane(backends, max_rows_per_request=MAX_ROWS, admission=calm_admission())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with _loop() as loop:
        first, second = (_listen(loop, plane, key_file, port) for _ in range(2))
        auth = {"Authorization": f"Bearer {api_keys['ops']}"}
        # What HAProxy checks each server with; open, as on Serve's replica server.
        assert requests.get(url + HEALTH_PATH, timeout=10).text == "success"
        for _ in range(20):  # a new connection each: either server may take it
            act = requests.post(url + "/v1/npc/act", json=npc_tick(3), headers=auth, timeout=10)
            assert act.status_code == 200, act.text
            assert len(act.json()["decisions"]) == 3
        # The same guard and errors as behind Serve's server.
        assert requests.post(url + "/v1/npc/act", json=npc_tick(1), timeout=10).status_code == 401
        bad = requests.post(url + "/v1/npc/act", json={"npcs": "x"}, headers=auth, timeout=10)
        assert bad.status_code == 422
        assert "npcs" in bad.json()["error"]["message"]
        # One replica stops; the port stays served by the other.
        _stop(loop, first, 1.0)
        act = requests.post(url + "/v1/npc/act", json=npc_tick(1), headers=auth, timeout=10)
        assert act.status_code == 200
        _stop(loop, second, 1.0)
        with pytest.raises(requests.ConnectionError):
            requests.get(url + HEALTH_PATH, timeout=10)


def test_a_stopping_server_finishes_the_request_in_flight(
    backends: dict[str, LocalBackend], key_file: Path, api_keys: dict[str, str]
) -> None:
    entered = threading.Event()
    slow = _Slow(backends["npc-behavior"], entered)
    plane = DataPlane({**backends, "npc-behavior": slow}, MAX_ROWS, admission=calm_admission())
    port = free_port()
    headers = {"Authorization": f"Bearer {api_keys['ops']}", "X-Deadline-Ms": "30000"}
    answers: list[requests.Response] = []
    with _loop() as loop:
        listener = _listen(loop, plane, key_file, port)
        caller = threading.Thread(
            target=lambda: answers.append(
                requests.post(
                    f"http://127.0.0.1:{port}/v1/npc/act", json=npc_tick(2), headers=headers,
                    timeout=30,
                )
            )
        )  # fmt: skip
        caller.start()
        assert entered.wait(10)
        stopping = asyncio.run_coroutine_threadsafe(listener.stop(10.0), loop)
        time.sleep(0.3)  # the stop has begun: the listener is closed
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=5)
        loop.call_soon_threadsafe(slow.release.set)
        stopping.result(timeout=15)
        caller.join(timeout=15)
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    assert answer.json()["source"] == "model"


def test_a_port_taken_by_another_program_is_a_clear_error(
    backends: dict[str, LocalBackend], key_file: Path
) -> None:
    plane = DataPlane(backends, max_rows_per_request=MAX_ROWS, admission=calm_admission())
    with contextlib.closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenerUnavailableError, match="replica_http_port"):
            HttpListener(create_app(plane, settings_with_keys(key_file)), "127.0.0.1", port)
