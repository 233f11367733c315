"""The admin API's listener: uvicorn on one thread of the process that owns the registry.

A few operator calls a minute need no Ray deployment; running it in the stack
keeps MLflow's credentials out of every replica. The socket is bound before
the thread starts, so port 0 works and the URL is known at once.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from models.errors import GameserveError
from serving.settings import host_port

logger = logging.getLogger(__name__)


class AdminServer:
    def __init__(self, app: FastAPI, host: str, port: int, *, keep_alive_s: int = 5) -> None:
        self._socket = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM
        )
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as exc:
            self._socket.close()
            raise GameserveError(
                f"serving.admin.port: cannot listen on {host}:{port}: {exc}"
            ) from None
        bound = self._socket.getsockname()
        self.url = f"http://{host_port(host, bound[1])}"
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            # An idle client may not hold one of the few connections for long.
            timeout_keep_alive=keep_alive_s,
            limit_concurrency=64,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="admin-api", daemon=True)

    def _run(self) -> None:
        self._server.run(sockets=[self._socket])

    def start(self, timeout_s: float = 10.0) -> AdminServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise GameserveError(f"admin API did not start on {self.url}")
            time.sleep(0.02)
        logger.info("admin API on %s", self.url)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
        self._socket.close()

    def __enter__(self) -> AdminServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
