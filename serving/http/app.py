"""The FastAPI application, built from its dependencies, never from globals."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from serving.dataplane.plane import DataPlane
from serving.http.direct import install_direct_routes
from serving.http.errors import install_error_handlers
from serving.http.game_api import game_router, request_models
from serving.http.guard import Guard
from serving.http.json_body import register_schemas
from serving.http.metrics import Snapshot, local_snapshot, metrics_router
from serving.http.v2 import v2_router
from serving.protocol.access import Access
from serving.settings import ServingSettings


def create_app(
    plane: DataPlane,
    settings: ServingSettings,
    metrics: Snapshot | None = None,
    access: Access | None = None,
) -> FastAPI:
    """The whole HTTP surface over one data plane, behind its guard.

    ``metrics`` gives what ``/metrics`` renders (the collector's totals under
    Ray); this process's own figures without it. ``access`` is shared with the
    replica's gRPC service when it has one.
    """
    app = FastAPI(
        title="gameserve",
        description="Gameplay model inference: the game API and the Open Inference Protocol v2. "
        "Every route but /v2/health/* takes 'Authorization: Bearer <api key>'.",
    )
    routers = [game_router(plane), v2_router(plane)]
    for router in routers:
        app.include_router(router)
    install_error_handlers(app)
    register_schemas(app, request_models(plane))
    install_direct_routes(app, routers)
    app.include_router(metrics_router(plane, metrics or local_snapshot(plane)))
    limits = settings.limits
    app.add_middleware(
        Guard,
        access=access or Access.from_settings(settings),
        max_body_bytes=limits.max_body_bytes,
        max_in_flight=limits.max_in_flight,
        retry_after_s=settings.retry_after_s,
    )
    if limits.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=limits.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-session-id", "x-player-id"],
        )
    return app
