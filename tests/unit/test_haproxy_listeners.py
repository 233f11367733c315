from __future__ import annotations

from serving.haproxy_listeners import bind_to
from serving.substrate import ServeRuntime

CONFIG = """frontend prometheus
    bind :9101
    mode http
frontend http_frontend
    bind 127.0.0.1:8000
listen stats
  bind *:8404
  stats enable
"""


def test_only_the_all_interface_listeners_move() -> None:
    moved = bind_to(CONFIG, "127.0.0.1")
    assert [line.strip() for line in moved.splitlines() if "bind" in line] == [
        "bind 127.0.0.1:9101",
        "bind 127.0.0.1:8000",
        "bind 127.0.0.1:8404",
    ]
    assert bind_to(moved, "127.0.0.1") == moved


def test_haproxy_runs_through_the_wrapper_unless_told_to_keep_rays_binds() -> None:
    env = ServeRuntime(haproxy_ingress=True).env_vars()
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"].endswith("gameserve-haproxy")
    assert env["GAMESERVE_HAPROXY_HOST"] == "127.0.0.1"
    kept = ServeRuntime(haproxy_ingress=True, listener_host="*").env_vars()
    assert "RAY_SERVE_HAPROXY_BINARY_PATH" not in kept
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in ServeRuntime(haproxy_ingress=False).env_vars()
