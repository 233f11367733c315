"""Routes whose endpoint takes only the request, called without FastAPI's routing.

A game server calls ``/v1/npc/act`` (or the v2 ``infer`` route) every tick. For
such a call FastAPI walks its route list, solves the endpoint's dependencies and
runs its exception middleware: as much time as parsing, running the NPC
model and writing the answer together (benchmarks/reference/design-measurements.md).
An endpoint that takes just the ``Request`` and returns a ``Response`` needs
none of that, so
``DirectRoutes`` (a plain ASGI middleware) matches those routes first and calls
the endpoint itself; errors go through the same ``response_for`` as the app's
exception handlers. The routes stay declared on the app, so the OpenAPI
document, ``/docs`` and every other route are FastAPI's as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.http.errors import response_for
from serving.upstream import takes_only_the_request

Endpoint = Callable[[Request], Awaitable[Response]]


class DirectRoutes:
    """ASGI middleware: POSTs to request-only routes go straight to their endpoint."""

    def __init__(self, app: ASGIApp, routes: list[APIRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for route in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    await self._call(route.endpoint, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    @staticmethod
    async def _call(endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await endpoint(Request(scope, receive))
        except Exception as exc:  # every error becomes the one error body, as in the app
            response = response_for(exc, scope["path"])
        await response(scope, receive, send)


def install_direct_routes(app: FastAPI, routers: list[APIRouter]) -> None:
    """Serve the request-only POST routes of ``routers`` (included in ``app``) directly."""
    routes = [
        route
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
        and "POST" in (route.methods or ())
        and takes_only_the_request(route)
    ]
    app.add_middleware(DirectRoutes, routes=routes)
