"""What HTTP costs per request before any model runs: the floor under every HTTP figure.

    .venv/bin/python -m benchmarks.http_floor [--duration 8] [--runs 2]

Each target answers a constant body (the size of a single-NPC answer), the same
way, from the same tiny FastAPI app whose one ASGI middleware answers every
POST (as ``serving/http/direct.py`` does for the tick routes):

- ``plain uvicorn``: one uvicorn process;
- ``Serve direct ingress + HAProxy``: the app behind ``@serve.ingress`` in two
  replicas on gameserve's default substrate (HAProxy in front, Serve's replica
  HTTP server and per-request wrapper): the path every gameserve HTTP request takes;
- ``uvicorn inside 2 Serve replicas``: the same two replicas, each also running
  gameserve's ``HttpListener`` (serving/http/listener.py: a uvicorn of its own on
  the replica's event loop, one port shared by SO_REUSEPORT), with no HAProxy and
  no Serve wrapper in the path.

Load: wrk, single-NPC JSON body, c=16, on loopback. Prints req/s, p99 and the
CPU each target's processes spent per request (their summed CPU time over the
run, divided by the requests answered), with ratios to plain uvicorn.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil  # type: ignore[import-untyped]  # (Ray depends on it; no stubs installed)
from fastapi import FastAPI
from ray import serve

from benchmarks import wrk
from benchmarks.local_ray import local_ray
from benchmarks.serving_loads import single_json
from serving.http.listener import HttpListener
from serving.runtime.ports import free_port
from serving.runtime.substrate import ServeRuntime

ANSWER = (
    b'{"decisions":[{"npc_id":"npc-0","action":"attack","confidence":0.5}],'
    b'"model":{"name":"npc-behavior","version":"1"},"source":"model","fallback_reason":null}'
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]


class ConstantAnswer:
    """ASGI middleware: every HTTP request gets ``ANSWER`` once its body is read."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": ANSWER})


def create_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(ConstantAnswer)
    return app


app = create_app()  # for `uvicorn benchmarks.http_floor:app`


@contextlib.contextmanager
def plain_uvicorn() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.http_floor:app", "--port", str(port),
         "--log-level", "warning", "--no-access-log"]
    )  # fmt: skip
    try:
        _wait(f"http://127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            host, port = url.removeprefix("http://").split(":")
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        time.sleep(0.2)
    raise SystemExit(f"{url} did not listen within {timeout_s:.0f} s")


def _cpu_s(matches: tuple[str, ...]) -> float:
    total = 0.0
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if any(match in cmdline for match in matches):
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
    return total


def measure(
    target: str, url: str, matches: tuple[str, ...], args: argparse.Namespace
) -> list[tuple[str, float, float, float]]:
    (load,) = single_json(16)["single JSON"]
    assert isinstance(load, wrk.Load)
    wrk.run(url, load, 2)  # warm-up
    rows = []
    for _ in range(args.runs):
        before = _cpu_s(matches)
        result = wrk.run(url, load, args.duration)
        cpu_ms = (_cpu_s(matches) - before) / (result.requests_per_s * args.duration) * 1000
        rows.append((target, result.requests_per_s, result.p99_ms, cpu_ms))
        print(
            f"{target:<36}{result.requests_per_s:>10,.0f}{result.p99_ms:>9.1f}{cpu_ms:>12.3f}"
            f"{result.bad:>6}",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    parser.add_argument("--runs", type=int, default=2, help="runs per target")
    args = parser.parse_args()
    print(f"{'target':<36}{'req/s':>10}{'p99 ms':>9}{'CPU ms/req':>12}{'bad':>6}")
    rows = []
    with plain_uvicorn() as url:
        rows += measure("plain uvicorn", url, ("benchmarks.http_floor:app",), args)
    port, own_port = free_port(), free_port()
    # Serve's own replica servers behind HAProxy; the listener here is started by hand.
    with local_ray(ServeRuntime(haproxy_ingress=True, replica_http_port=None)):
        serve.start(http_options={"host": "127.0.0.1", "port": port})

        @serve.deployment(num_replicas=2, max_ongoing_requests=64)
        @serve.ingress(create_app())
        class Floor:
            def __init__(self) -> None:
                # gameserve's own listener, started on the replica's loop (Serve builds
                # the replica there).
                self.own = HttpListener(create_app(), "127.0.0.1", own_port)
                self.started = asyncio.get_running_loop().create_task(self.own.start())

        serve.run(Floor.bind(), name="floor", route_prefix="/")  # type: ignore[attr-defined]
        _wait(f"http://127.0.0.1:{port}")
        _wait(f"http://127.0.0.1:{own_port}")
        replicas = ("ServeReplica:floor",)
        rows += measure(
            "Serve direct ingress + HAProxy", f"http://127.0.0.1:{port}",
            (*replicas, "haproxy"), args,
        )  # fmt: skip
        rows += measure(
            "uvicorn inside 2 Serve replicas", f"http://127.0.0.1:{own_port}", replicas, args
        )
    plain = [row for row in rows if row[0] == "plain uvicorn"]
    base_rps = sum(row[1] for row in plain) / len(plain)
    base_cpu = sum(row[3] for row in plain) / len(plain)
    print()
    for target in dict.fromkeys(row[0] for row in rows):
        mine = [row for row in rows if row[0] == target]
        rps = sum(row[1] for row in mine) / len(mine)
        cpu = sum(row[3] for row in mine) / len(mine)
        print(
            f"{target:<36} {rps / base_rps:5.2f}x plain uvicorn's req/s, "
            f"{cpu / base_cpu:5.1f}x its CPU per request ({cpu:.3f} ms)"
        )


if __name__ == "__main__":
    main()
