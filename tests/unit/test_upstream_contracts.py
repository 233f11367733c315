"""Contracts with the upstream mechanisms fenced in ``serving/upstream.py``, on the pinned versions.

Each test reads the installed Ray, uvicorn or FastAPI and fails with a
message naming the mechanism that changed and where gameserve relies on it.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute

from serving import upstream
from serving.runtime.haproxy_edge import backend_name, plan_for
from serving.runtime.haproxy_listeners import OVERLOADED_FILE, harden
from serving.settings import ServingSettings

APP = "gameserve"


def test_serve_builds_the_ingress_app_through_the_hook_we_set() -> None:
    from ray import serve
    from ray.serve._private import replica

    assert replica.SERVE_BUILD_ASGI_APP_METHOD == upstream.SERVE_BUILD_ASGI_APP, (
        "Ray Serve renamed its late-bound ASGI app hook: update serving/upstream.py"
    )

    class Replica:
        def build_app(self) -> FastAPI:
            return FastAPI()

        async def drain(self) -> None:
            return None

    hooked = upstream.late_app_ingress(Replica, build_app="build_app", drain="drain")
    serve.ingress()(hooked)  # raises ValueError when Serve no longer accepts the hook


def test_serve_awaits_an_async_del_on_a_graceful_stop() -> None:
    from ray.serve._private.replica import UserCallableWrapper

    source = inspect.getsource(UserCallableWrapper.call_destructor)
    message = (
        "Ray Serve no longer awaits the callable's __del__ on shutdown: the ingress "
        "replica's drain (serving/app/ingress.py) would never run"
    )
    assert f"self._callable.{upstream.SERVE_SHUTDOWN}" in source, message
    assert "await self._call_func_or_gen" in source, message


def test_uvicorn_takes_signals_only_through_capture_signals() -> None:
    serve_source = inspect.getsource(uvicorn.Server.serve)
    assert "capture_signals" in serve_source, (
        "uvicorn.Server.serve no longer uses capture_signals: the listener's "
        "override in serving/upstream.py would leave SIGTERM to uvicorn"
    )


def test_a_listener_in_the_main_thread_leaves_sigterm_to_its_owner() -> None:
    """Run where uvicorn would install its handlers (the main thread) and look."""
    before = signal.getsignal(signal.SIGTERM)
    seen: list[Any] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))

    async def run() -> None:
        config = uvicorn.Config(FastAPI(), lifespan="off", log_config=None)
        server = upstream.server_without_signals(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        for _ in range(500):  # bounded: 5 s
            if server.started:
                break
            await asyncio.sleep(0.01)
        seen.append(signal.getsignal(signal.SIGTERM))
        server.should_exit = True
        await task

    asyncio.run(run())
    assert seen == [before]


def test_fastapi_routes_expose_their_dependant() -> None:
    app = FastAPI()

    @app.post("/plain")
    async def plain(request: Request) -> Response:
        return Response()

    @app.post("/items/{item}")
    async def with_path(item: str, request: Request) -> Response:
        return Response()

    routes = {r.path: r for r in app.routes if isinstance(r, APIRoute)}
    assert upstream.takes_only_the_request(routes["/plain"]), (
        "FastAPI's APIRoute.dependant changed: serving/http/direct.py can no longer "
        "tell request-only routes"
    )
    assert not upstream.takes_only_the_request(routes["/items/{item}"])


def test_fastapi_builds_its_document_through_app_openapi_once() -> None:
    app = FastAPI()
    calls: list[int] = []

    def extend(document: dict[str, Any]) -> None:
        calls.append(1)
        document.setdefault("components", {})["x-gameserve"] = True

    upstream.extend_openapi(app, extend)
    for _ in range(2):
        assert app.openapi()["components"]["x-gameserve"] is True
    assert calls == [1], "FastAPI no longer caches its document in app.openapi_schema"


def rays_rendered_config(folder: Path) -> str:
    """What Ray's HAProxy manager writes for one app with one replica and a fallback."""
    from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig

    config = HAProxyConfig(
        socket_path=str(folder / "admin.sock"),
        server_state_base=str(folder),
        server_state_file=str(folder / "server-state"),
    )
    backend = BackendConfig(
        name=backend_name(APP),
        path_prefix="/",
        servers=[ServerConfig("replica", "127.0.0.1", 30001, "replica")],
        fallback_server=ServerConfig("fallback", "127.0.0.1", 8000),
        app_name=APP,
    )
    path = folder / "haproxy.cfg"
    HAProxyApi(config, {backend.name: backend}, str(path))._generate_config_file_internal()
    return path.read_text()


def test_every_edit_of_rays_haproxy_config_finds_its_anchor(tmp_path: Path) -> None:
    """Ray's real template, every edit the wrapper makes, and HAProxy's own check."""
    rendered = rays_rendered_config(tmp_path)
    overloaded = tmp_path / OVERLOADED_FILE
    overloaded.write_text("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
    plan = plan_for(ServingSettings())
    hardened = harden(
        rendered, "127.0.0.1", 1_048_576, 5, 4, 20, overloaded, plan.backend, 40000, plan
    )
    anchors = {
        "all-interface binds moved": ("bind *:" not in hardened and "bind :" not in hardened),
        "runtime socket owner-only": " mode 600 level admin" in hardened,
        "http-request timeout": "timeout http-request 5s" in hardened,
        "per-server maxconn": " maxconn 4" in hardened,
        "queue timeout": "timeout queue 20ms" in hardened,
        "JSON 503": f"errorfile 503 {overloaded}" in hardened,
        "413 at the edge": "deny_status 413" in hardened,
        "servers re-pointed": "server replica 127.0.0.1:40000" in hardened,
        "fallback kept": "server fallback 127.0.0.1:8000" in hardened,
        "edge rules": "# gameserve edge rules" in hardened,
    }
    missing = [name for name, found in anchors.items() if not found]
    assert not missing, f"Ray's HAProxy template changed; these edits found no anchor: {missing}"
    assert (
        harden(hardened, "127.0.0.1", 1_048_576, 5, 4, 20, overloaded, plan.backend, 40000, plan)
        == hardened
    )

    path = tmp_path / "hardened.cfg"
    path.write_text(hardened)
    check = subprocess.run(
        [upstream.real_haproxy_binary(), "-c", "-f", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert check.returncode == 0, f"HAProxy refuses the hardened config:\n{check.stderr}"


@pytest.mark.parametrize("variable", [upstream.RAY_HAPROXY_BINARY_VARIABLE])
def test_ray_still_reads_the_binary_hook(variable: str) -> None:
    from ray.serve._private import haproxy

    assert variable in inspect.getsource(haproxy), (
        f"Ray no longer reads {variable}: the gameserve-haproxy wrapper would never run"
    )


def test_ray_turns_token_auth_on_by_rereading_its_config() -> None:
    from ray._private.authentication import authentication_token_setup

    source = inspect.getsource(authentication_token_setup._enable_token_auth)
    assert upstream.RAY_AUTH_MODE_VARIABLE in inspect.getsource(authentication_token_setup)
    assert "Config.initialize" in source, (
        "Ray no longer enables token auth by re-reading its config: "
        "upstream.ray_token_auth_for_this_process may not reach a token-authenticated head"
    )
