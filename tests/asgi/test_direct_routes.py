"""Request-only POST routes skip FastAPI's routing but answer exactly as the app would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from models.errors import OverloadedError
from serving.http.direct import DirectRoutes, install_direct_routes
from serving.http.errors import install_error_handlers
from tests.payloads import npc_tick


def _direct_paths(app: FastAPI) -> set[str]:
    (middleware,) = [m for m in app.user_middleware if cast(object, m.cls) is DirectRoutes]
    routes: list[APIRoute] = middleware.kwargs["routes"]  # type: ignore[assignment]
    return {route.path for route in routes}


def test_the_per_tick_routes_are_served_directly(client: TestClient) -> None:
    assert isinstance(client.app, FastAPI)
    assert _direct_paths(client.app) == {
        "/v1/npc/act",
        "/v1/difficulty/recommend",
        "/v1/personalization/rank",
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}/infer",
    }


def test_other_methods_on_a_direct_path_still_reach_fastapi(client: TestClient) -> None:
    response = client.get("/v1/npc/act")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert client.post("/v1/npc/act", json=npc_tick(2)).status_code == 200


@pytest.fixture
def failing() -> Iterator[TestClient]:
    """An app whose direct routes fail the two ways a route can."""
    router = APIRouter()

    @router.post("/busy")
    async def busy(request: Request) -> Response:
        raise OverloadedError("queue full", retry_after_s=2.5)

    @router.post("/broken/{part}")
    async def broken(request: Request) -> Response:
        raise RuntimeError(f"bug in {request.path_params['part']}")

    @router.post("/typed")
    async def typed(count: int) -> dict[str, int]:
        return {"count": count}

    app = FastAPI()
    app.include_router(router)
    install_error_handlers(app)
    install_direct_routes(app, [router])
    assert _direct_paths(app) == {"/busy", "/broken/{part}"}  # /typed needs FastAPI
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_direct_route_errors_get_the_one_error_body(
    failing: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    busy = failing.post("/busy")
    assert (busy.status_code, busy.headers["Retry-After"]) == (503, "3")
    assert busy.json() == {"error": {"code": "overloaded", "message": "queue full"}}
    broken = failing.post("/broken/engine")
    assert broken.status_code == 500
    assert broken.json()["error"]["code"] == "internal_error"
    assert "bug in engine" in caplog.text  # the path parameter reached the endpoint
    assert failing.post("/typed?count=3").json() == {"count": 3}
