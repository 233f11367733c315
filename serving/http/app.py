"""The FastAPI application, built from its dependencies, never from globals."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from serving.dataplane.plane import DataPlane
from serving.http.direct import install_direct_routes
from serving.http.errors import install_error_handlers
from serving.http.game_api import game_router, request_models
from serving.http.guard import Guard
from serving.http.json_body import register_schemas
from serving.http.keys import KeyStore
from serving.http.metrics import Snapshot, local_snapshot, metrics_router
from serving.http.rate_limit import RateLimiter
from serving.http.v2 import v2_router
from serving.settings import ServingSettings

_NO_KEYS = Path("/nonexistent/gameserve-keys.json")


def create_app(
    plane: DataPlane, settings: ServingSettings, metrics: Snapshot | None = None
) -> FastAPI:
    """The whole HTTP surface over one data plane, behind its guard.

    ``metrics`` gives what ``/metrics`` renders (the collector's totals under
    Ray); this process's own figures without it.
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
    auth, limits = settings.auth, settings.limits
    keys = None
    if auth.mode == "on":
        # No key file means no valid key: every guarded route answers 401.
        keys = KeyStore(auth.keys_file or _NO_KEYS, auth.reload_interval_s)
    app.add_middleware(
        Guard,
        keys=keys,
        limiter=RateLimiter(
            auth.default_rate_per_s, auth.default_burst, share=1 / settings.ingress_replicas
        ),
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
