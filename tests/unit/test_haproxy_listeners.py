from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.runtime.haproxy_edge import backend_name
from serving.runtime.haproxy_listeners import OVERLOADED_RESPONSE, bind_to, harden
from serving.runtime.substrate import DEFAULT_REPLICA_HTTP_PORT, ServeRuntime

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
    assert json.loads(body)["error"]["code"] == "use_local"


APP_BACKENDS = """backend default_backend
    http-request return status 404
backend http-gameserve
    log global
    default-server maxconn 32
    server gameserve-ingress-a 10.0.0.5:40321 check
    server gameserve-ingress-b 10.0.0.6:40999 check observe layer4 error-limit 10
    server head_proxy 10.0.0.5:8000 check backup
backend http-other
    server other-a 10.0.0.5:41000 check
"""


def test_the_apps_servers_point_at_the_replicas_own_http_port() -> None:
    """Each replica of the application on the port its own server shares (same host);
    the head's fallback proxy and every other application's servers stay as Ray wrote."""
    hardened = harden(
        APP_BACKENDS, None, None, None, replica_backend=backend_name("gameserve"),
        replica_port=8002,
    )  # fmt: skip
    servers = [line.strip() for line in hardened.splitlines() if "server " in line]
    assert servers == [
        "default-server maxconn 32",
        "server gameserve-ingress-a 10.0.0.5:8002 check",
        "server gameserve-ingress-b 10.0.0.6:8002 check observe layer4 error-limit 10",
        "server head_proxy 10.0.0.5:8000 check backup",
        "server other-a 10.0.0.5:41000 check",
    ]
    again = harden(hardened, None, None, None, replica_backend="http-gameserve", replica_port=8002)
    assert again == hardened
    assert harden(APP_BACKENDS, None, None, None) == APP_BACKENDS
    assert backend_name("my app#2/x") == "http-my_app-2.x"  # Ray's get_safe_name


def test_the_replica_http_port_reaches_haproxy_only_behind_haproxy() -> None:
    env = ServeRuntime(haproxy_ingress=True, replica_http_port=8002).env_vars(app_name="arena")
    assert env["GAMESERVE_HAPROXY_REPLICA_PORT"] == "8002"
    assert env["GAMESERVE_HAPROXY_REPLICA_BACKEND"] == "http-arena"
    # The default: on (8002) behind HAProxy, which alone can send requests there.
    assert ServeRuntime(haproxy_ingress=True).replica_http_port == DEFAULT_REPLICA_HTTP_PORT
    assert ServeRuntime(haproxy_ingress=False).replica_http_port is None
    off = ServeRuntime(haproxy_ingress=True, replica_http_port=None)
    assert "GAMESERVE_HAPROXY_REPLICA_PORT" not in off.env_vars()
    with pytest.raises(ValidationError, match="replica_http_port"):
        ServeRuntime(haproxy_ingress=False, replica_http_port=8002)
    # A stack beside others (tests, benchmarks) takes a port of its own, if it has one.
    moved = ServeRuntime(haproxy_ingress=True).with_free_replica_port()
    assert moved.replica_http_port not in (None, DEFAULT_REPLICA_HTTP_PORT)
    assert ServeRuntime(haproxy_ingress=False).with_free_replica_port().replica_http_port is None
