"""The gRPC server an ingress replica runs beside its HTTP: grpcio's threads, its loop's work.

grpcio's synchronous server reads and writes HTTP/2 on a few threads of its
own; each call's work runs on the replica's event loop (``InferenceService``).
Measured on 2 cores (``benchmarks/grpc_servers.py``), it spends less CPU per
call than grpcio's asyncio server, whose poller thread hands every event to
the loop, and than grpclib's pure-Python HTTP/2.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from models.errors import GameserveError
from serving.rpc.service import InferenceService
from serving.settings import host_port

logger = logging.getLogger(__name__)


class PortUnavailableError(GameserveError):
    code = "grpc_port_unavailable"


class GrpcServer:
    """``service`` on ``host:port``, shared by every replica of the node that binds it.

    gRPC sets SO_REUSEPORT on Linux: each ingress replica binds the same port
    and the kernel spreads new connections over them, so gRPC needs no proxy
    of its own and a replica that stops takes only its connections along.
    """

    def __init__(
        self,
        service: InferenceService,
        host: str,
        port: int,
        *,
        max_message_bytes: int,
        max_concurrent_rpcs: int,
        threads: int = 4,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """``loop``: where the calls' work runs (the running loop when None)."""
        self.address = host_port(host, port)
        options = [
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", max_message_bytes),
            # An idle connection holds a file descriptor and a little memory; game
            # servers keep theirs busy, so one idle for minutes is a leak elsewhere.
            ("grpc.max_connection_idle_ms", 300_000),
        ]
        self._server = grpc.server(
            ThreadPoolExecutor(threads, thread_name_prefix="grpc"),
            handlers=[service.handler(loop or asyncio.get_running_loop())],
            options=options,
            maximum_concurrent_rpcs=max_concurrent_rpcs,
        )
        self.port = self._bind(host, port)

    def _bind(self, host: str, port: int) -> int:
        try:
            bound = self._server.add_insecure_port(self.address)
        except RuntimeError as exc:
            message = f"serving.grpc.port: cannot listen on {self.address}: {exc}"
            raise PortUnavailableError(message) from exc
        if bound == 0:
            raise PortUnavailableError(f"serving.grpc.port: cannot listen on {self.address}")
        return int(bound)

    async def start(self) -> None:
        self._server.start()
        logger.info("OIP v2 over gRPC on %s", self.address)

    async def stop(self, drain_s: float) -> None:
        """Refuse new calls at once; let those in flight finish within ``drain_s``."""
        started = time.monotonic()
        stopped = self._server.stop(drain_s)
        # Waited for off the loop: the calls still draining need it to finish.
        await asyncio.get_running_loop().run_in_executor(None, stopped.wait)
        logger.info("gRPC on %s stopped in %.2f s", self.address, time.monotonic() - started)
