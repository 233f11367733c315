from __future__ import annotations

import json
from pathlib import Path

from serving.runtime.haproxy_listeners import OVERLOADED_RESPONSE, bind_to, harden
from serving.runtime.substrate import ServeRuntime

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
    assert "GAMESERVE_HAPROXY_HOST" not in kept
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in ServeRuntime(haproxy_ingress=False).env_vars()


RAY_CONFIG = """global
    stats socket /tmp/haproxy-serve/admin.sock mode 666 level admin expose-fd listeners
    stats timeout 30s
defaults
    mode http
    option log-health-checks
    timeout client 30s
frontend prometheus
    bind :9101
frontend http_frontend
    bind 127.0.0.1:8000
    acl healthcheck path -i /-/healthz
"""


def test_the_runtime_socket_is_owner_only_and_slow_or_huge_requests_are_cut() -> None:
    hardened = harden(RAY_CONFIG, "127.0.0.1", 1048576, 5)
    assert "stats socket /tmp/haproxy-serve/admin.sock mode 600 level admin" in hardened
    assert "mode 666" not in hardened
    defaults = hardened.split("defaults\n")[1].split("frontend")[0]
    assert "    timeout http-request 5s\n" in defaults
    frontend = hardened.split("frontend http_frontend\n")[1]
    assert frontend.splitlines()[1] == (
        "    http-request deny deny_status 413 if { req.hdr_val(content-length) gt 1048576 }"
    )
    assert "bind 127.0.0.1:9101" in hardened
    assert harden(hardened, "127.0.0.1", 1048576, 5) == hardened


def test_the_substrate_sets_the_client_timeout_retries_and_body_limit() -> None:
    env = ServeRuntime(haproxy_ingress=True).env_vars(max_body_bytes=4096)
    assert env["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"] == "30"
    assert env["GAMESERVE_HAPROXY_MAX_BODY"] == "4096"
    assert env["GAMESERVE_HAPROXY_HTTP_REQUEST_TIMEOUT_S"] == "5"
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "5.0"  # Ray's: 30
    assert (env["RAY_SERVE_HAPROXY_RETRY_ON"], env["RAY_SERVE_HAPROXY_RETRIES"]) == (
        "conn-failure empty-response",
        "3",
    )


RAY_BACKEND = """defaults
    mode http
    timeout client 30s
    errorfile 503 /tmp/haproxy-serve/500.http
backend http-gameserve
    default-server fastinter 250ms downinter 250ms fall 2 rise 2 inter 5s check
    server SERVE_REPLICA_a 127.0.0.1:30000 check
"""


def test_replicas_get_a_bounded_share_and_the_rest_a_json_503_after_a_short_queue() -> None:
    hardened = harden(RAY_BACKEND, None, None, None, 32, 500, Path("/run/gs/gameserve-503.http"))
    assert "    default-server fastinter 250ms downinter 250ms fall 2 rise 2 inter 5s check " \
        "maxconn 32\n" in hardened  # fmt: skip
    assert "    timeout queue 500ms\n" in hardened.split("backend")[0]
    assert "    errorfile 503 /run/gs/gameserve-503.http\n" in hardened
    assert harden(hardened, None, None, None, 32, 500, Path("/run/gs/gameserve-503.http")) == (
        hardened
    )
    head, _, body = OVERLOADED_RESPONSE.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 503 ")
    assert "retry-after: 1" in head.split("\r\n")
    assert json.loads(body)["error"]["code"] == "overloaded"
