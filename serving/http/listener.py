"""The app on an HTTP server of the ingress replica's own, beside Ray Serve's.

Serve gives each ingress replica a uvicorn server whose every request passes
through Serve's per-request wrapper (request context, ongoing-request
accounting, access-log record, metrics, a disconnect-watching task): with a
constant answer and no model, that path costs about 0.6 ms of CPU per request
on our 2-core machines against 0.1 ms for the same app on a uvicorn of its own
in the same replica process (benchmarks/http_floor.py). None of it is needed
here: the app keeps its own admission, deadlines, metrics and logs, and the
ingress autoscales on its own occupancy.

So, when ``ServeRuntime.replica_http_port`` is set (8002 by default behind
HAProxy), every ingress replica serves the same app (same data plane, same key
checks) on that port, on its own event loop, and HAProxy's servers for the
application point there (``serving/runtime/haproxy_listeners.py``). All replicas
of a node bind the port with SO_REUSEPORT and the kernel spreads HAProxy's
connections across them, as for gRPC. HAProxy's health check (``GET /-/healthz``)
is answered here, since Serve's replica server, which answers it otherwise, is no
longer asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from models.errors import GameserveError
from serving.settings import host_port
from serving.upstream import server_without_signals

logger = logging.getLogger(__name__)

HEALTH_PATH = "/-/healthz"  # what Ray's HAProxy config checks each server with
HEALTHY = b"success"  # what Serve's replica server answers it with
# Longer than HAProxy keeps an idle server connection for reuse, so HAProxy is
# the side that closes it: a server closing first races a request sent on it.
KEEP_ALIVE_S = 90  # Serve's own default for its replica servers


class ListenerUnavailableError(GameserveError):
    code = "replica_http_port_unavailable"


class _Health:
    """``GET /-/healthz`` answered 200 while the server runs, the rest to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == HEALTH_PATH:
            length = str(len(HEALTHY)).encode()
            headers = [(b"content-type", b"text/plain"), (b"content-length", length)]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": HEALTHY})
            return
        await self.app(scope, receive, send)


class HttpListener:
    """``app`` on ``host:port``, shared by every replica of the node that binds it."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self.address = host_port(host, port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            self._socket.bind((host, port))
        except OSError as exc:
            self._socket.close()
            message = f"runtime.replica_http_port: cannot listen on {self.address}: {exc}"
            raise ListenerUnavailableError(message) from exc
        config = uvicorn.Config(
            _Health(app),
            lifespan="off",
            access_log=False,
            log_config=None,
            log_level=logging.WARNING,
            timeout_keep_alive=KEEP_ALIVE_S,
            # The app's guard refuses an oversized body; HAProxy already bounds
            # headers, slow clients and connections in front of this server.
            server_header=False,
        )
        # uvicorn would take over SIGINT and SIGTERM, which are Serve's in a replica.
        self._server = server_without_signals(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[self._socket])
        )
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start
                raise ListenerUnavailableError(f"HTTP on {self.address} did not start")
            await asyncio.sleep(0.01)
        logger.info("the app's HTTP on %s (HAProxy's servers point here)", self.address)

    async def stop(self, drain_s: float) -> None:
        """Stop accepting at once, close idle connections, let requests in flight finish
        within ``drain_s`` (HAProxy resends what a closed connection had not sent)."""
        if self._task is None:
            self._socket.close()
            return
        started = time.monotonic()
        self._server.config.timeout_graceful_shutdown = max(1, round(drain_s))
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        logger.info("HTTP on %s stopped in %.2f s", self.address, time.monotonic() - started)
