"""HAProxy as Ray starts it, with the config hardened first.

Ray renders HAProxy's config from a template with no setting for several things
a public ingress needs, and starts whatever its binary hook names
(``serving/upstream.py``) as ``BINARY -db -f CONFIG ...``. ``ServeRuntime`` points it at this
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
  a body sent without one);
- each ingress replica gets at most ``GAMESERVE_HAPROXY_SERVER_MAXCONN``
  requests at once; the rest wait in HAProxy's queue, at most
  ``GAMESERVE_HAPROXY_TIMEOUT_QUEUE_MS``, then get a JSON 503 with
  ``Retry-After`` (Ray's template answers any 503 as a bare 500). Without the
  bound, an overload sat in the replicas' sockets and event loops, unseen by
  any deadline: under a 3x spike every answer took 8 s and clients gave up on
  requests the replicas then still computed (benchmarks/spike.py);
- with ``GAMESERVE_HAPROXY_REPLICA_PORT`` set (``ServeRuntime.replica_http_port``),
  the servers of the application's backend (``GAMESERVE_HAPROXY_REPLICA_BACKEND``)
  are re-pointed from each replica's Serve HTTP port to that port, where every
  ingress replica of the node serves the app with a server of its own
  (``serving/http/listener.py``): no Serve per-request wrapper in the path. The
  fallback ``backup`` server (the head's Serve proxy) is left as it is;
- with ``GAMESERVE_HAPROXY_EDGE`` set (an ``EdgePlan`` as JSON), the frontend gets
  gameserve's edge rules, rendered from that plan by ``serving/runtime/haproxy_edge.py``:
  the arrival stamp deadlines count from, each route's priority class, and the
  fast ``use_local`` refusals. They are configuration gameserve renders, placed
  after the frontend's ``bind`` line, the one place this module adds lines to.
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
from pathlib import Path

from serving.runtime.haproxy_edge import EdgePlan, render, use_local_body
from serving.upstream import RAY_HAPROXY_BINARY_VARIABLE, real_haproxy_binary

HOST_VARIABLE = "GAMESERVE_HAPROXY_HOST"
MAX_BODY_VARIABLE = "GAMESERVE_HAPROXY_MAX_BODY"
HTTP_REQUEST_TIMEOUT_VARIABLE = "GAMESERVE_HAPROXY_HTTP_REQUEST_TIMEOUT_S"
SERVER_MAXCONN_VARIABLE = "GAMESERVE_HAPROXY_SERVER_MAXCONN"
TIMEOUT_QUEUE_VARIABLE = "GAMESERVE_HAPROXY_TIMEOUT_QUEUE_MS"
REPLICA_PORT_VARIABLE = "GAMESERVE_HAPROXY_REPLICA_PORT"
REPLICA_BACKEND_VARIABLE = "GAMESERVE_HAPROXY_REPLICA_BACKEND"
EDGE_VARIABLE = "GAMESERVE_HAPROXY_EDGE"
NICENESS_VARIABLE = "GAMESERVE_HAPROXY_NICENESS"
OVERLOADED_FILE = "gameserve-503.http"
# The app's own error shape (serving/http/errors.py), so clients parse one format.
_OVERLOADED_BODY = (
    use_local_body(
        "no ingress replica could take this request within its deadline; use local "
        "behaviour and retry after Retry-After seconds"
    )
    + "\n"
)
# With its length, so HAProxy keeps the client's connection: an overloaded stack
# that closed every refused connection would pay for the reconnects too.
OVERLOADED_RESPONSE = (
    "HTTP/1.1 503 Service Unavailable\r\n"
    "content-type: application/json\r\n"
    f"content-length: {len(_OVERLOADED_BODY)}\r\n"
    "retry-after: 1\r\n"
    "cache-control: no-cache\r\n"
    "\r\n" + _OVERLOADED_BODY
)
# `bind *:8404` and `bind :9101`, alone on their line; `bind 127.0.0.1:8000` is left be.
_ANY_INTERFACE = re.compile(r"^(\s*bind\s+)\*?:(\d+)[ \t]*$", re.MULTILINE)
_SOCKET_MODE = re.compile(r"^(\s*stats socket \S+ mode )\d+", re.MULTILINE)
_DEFAULTS = re.compile(r"^defaults[^\n]*\n(\s*)mode http[^\n]*\n", re.MULTILINE)
_HTTP_REQUEST_TIMEOUT = re.compile(r"^\s*timeout http-request ", re.MULTILINE)
_FRONTEND_BIND = re.compile(r"^frontend http_frontend\n(\s*)bind [^\n]*\n", re.MULTILINE)
_DEFAULT_SERVER = re.compile(r"^(\s*default-server [^\n]*?)[ \t]*$", re.MULTILINE)
_TIMEOUT_QUEUE = re.compile(r"^\s*timeout queue ", re.MULTILINE)
_ERRORFILE_503 = re.compile(r"^(\s*errorfile 503 )\S+", re.MULTILINE)
_SERVER = re.compile(r"^(\s*server \S+ )(\S+):(\d+)( [^\n]*)$", re.MULTILINE)
_EDGE_MARK = "# gameserve edge rules"
_BODY_RULE = "http-request deny deny_status 413 if {{ req.hdr_val(content-length) gt {limit} }}"


def bind_to(config: str, host: str) -> str:
    """``config`` with every all-interface ``bind`` moved to ``host``."""
    return _ANY_INTERFACE.sub(rf"\g<1>{host}:\g<2>", config)


def repoint_servers(config: str, backend: str, port: int) -> str:
    """``config`` with the non-backup servers of ``backend`` on ``port`` (same hosts)."""
    block = re.search(rf"^backend {re.escape(backend)}\n(?:[ \t][^\n]*\n?)*", config, re.M)
    if block is None:
        return config

    def repoint(match: re.Match[str]) -> str:
        if " backup" in match.group(4):
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}:{port}{match.group(4)}"

    start, end = block.span()
    return config[:start] + _SERVER.sub(repoint, config[start:end]) + config[end:]


def _in_defaults(config: str, line: str) -> str:
    return _DEFAULTS.sub(lambda m: f"{m.group(0)}{m.group(1)}{line}\n", config, count=1)


def harden(
    config: str,
    host: str | None,
    max_body_bytes: int | None,
    http_request_timeout_s: int | None,
    server_maxconn: int | None = None,
    timeout_queue_ms: int | None = None,
    overloaded_file: Path | None = None,
    replica_backend: str | None = None,
    replica_port: int | None = None,
    edge: EdgePlan | None = None,
) -> str:
    """``config`` with the changes listed in the module docstring; idempotent."""
    if host:
        config = bind_to(config, host)
    config = _SOCKET_MODE.sub(r"\g<1>600", config)
    if http_request_timeout_s and not _HTTP_REQUEST_TIMEOUT.search(config):
        config = _in_defaults(config, f"timeout http-request {http_request_timeout_s}s")
    if server_maxconn:
        config = _DEFAULT_SERVER.sub(
            lambda m: m.group(0) if " maxconn " in m.group(0) else
            f"{m.group(1)} maxconn {server_maxconn}",
            config,
        )  # fmt: skip
    if timeout_queue_ms and not _TIMEOUT_QUEUE.search(config):
        config = _in_defaults(config, f"timeout queue {timeout_queue_ms}ms")
    if overloaded_file is not None:
        config = _ERRORFILE_503.sub(rf"\g<1>{overloaded_file}", config)
    if max_body_bytes and "deny_status 413" not in config:
        rule = _BODY_RULE.format(limit=max_body_bytes)
        config = _FRONTEND_BIND.sub(lambda m: f"{m.group(0)}{m.group(1)}{rule}\n", config, count=1)
    if replica_backend and replica_port:
        config = repoint_servers(config, replica_backend, replica_port)
    if edge is not None and _EDGE_MARK not in config:
        present = re.search(rf"^backend {re.escape(edge.backend)}$", config, re.MULTILINE)
        rules = render(edge, edge.backend if present else None)
        config = _FRONTEND_BIND.sub(lambda m: f"{m.group(0)}{rules}", config, count=1)
    return config


def _number(variable: str) -> int | None:
    value = os.environ.get(variable)
    return int(value) if value else None


def _edge_plan() -> EdgePlan | None:
    value = os.environ.get(EDGE_VARIABLE)
    return EdgePlan.model_validate_json(value) if value else None


def _rewrite(path: Path) -> None:
    # Under Ray's own lock on the file, which it holds while writing it.
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            overloaded = path.with_name(OVERLOADED_FILE)
            overloaded.write_text(OVERLOADED_RESPONSE)
            path.write_text(
                harden(
                    path.read_text(),
                    os.environ.get(HOST_VARIABLE),
                    _number(MAX_BODY_VARIABLE),
                    _number(HTTP_REQUEST_TIMEOUT_VARIABLE),
                    _number(SERVER_MAXCONN_VARIABLE),
                    _number(TIMEOUT_QUEUE_VARIABLE),
                    overloaded,
                    os.environ.get(REPLICA_BACKEND_VARIABLE),
                    _number(REPLICA_PORT_VARIABLE),
                    _edge_plan(),
                )
            )
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _prioritise() -> None:
    """HAProxy at its own nice value: the edge must not wait for the CPU behind the
    replicas it protects, or its stamps and refusals come late. Going below the
    workers' value needs CAP_SYS_NICE; without it HAProxy keeps theirs."""
    niceness = _number(NICENESS_VARIABLE)
    if niceness is None:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except PermissionError:
        print(
            f"gameserve-haproxy: cannot take nice {niceness}; keeping {os.nice(0)}", file=sys.stderr
        )


def main() -> None:
    _prioritise()
    args = sys.argv[1:]
    if "-f" in args:
        _rewrite(Path(args[args.index("-f") + 1]))
    # The real binary: ray-haproxy's own lookup, minus the override that names this program.
    os.environ.pop(RAY_HAPROXY_BINARY_VARIABLE, None)
    binary = real_haproxy_binary()
    os.execv(binary, [binary, *args])
