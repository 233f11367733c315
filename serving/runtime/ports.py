"""Ports for servers that share a machine with others: tests, benchmarks, a local stack.

A port the kernel hands out for binding to port 0 lies in its ephemeral range, the
same range it draws the local port of every outgoing connection from. Between the
moment such a port is chosen and the moment a server binds it, any process's next
connection may take it as its own end, and the server's bind fails: with Ray,
MLflow and HAProxy opening connections by the hundred, this made a stack's start
fail now and then. So ``free_port`` chooses below that range, where connections
never take their ports, and above Ray's default worker ports (10002-19999).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

# Above Ray's default worker ports (min_worker_port 10002, max_worker_port 19999).
_LOWEST = 20_000
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default, where the kernel does not say


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing holds on ``host``, outside the range outgoing connections use."""
    high = _ephemeral_low() - 1
    if high - _LOWEST >= 1_000:
        chooser = random.SystemRandom()  # apart from seeded tests' own random streams
        for _ in range(200):
            port = chooser.randint(_LOWEST, high)
            if _bindable(host, port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded machine
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) == 0
