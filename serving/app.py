"""The FastAPI application, built from its dependencies, never from globals."""

from __future__ import annotations

from fastapi import FastAPI

from serving.data_plane import DataPlane
from serving.http.direct import install_direct_routes
from serving.http.errors import install_error_handlers
from serving.http.game_api import REQUEST_MODELS, game_router
from serving.http.json_body import register_schemas
from serving.http.v2 import v2_router


def create_app(plane: DataPlane) -> FastAPI:
    """The whole HTTP surface over one data plane."""
    app = FastAPI(
        title="gameserve",
        description="Gameplay model inference: the game API and the Open Inference Protocol v2.",
    )
    routers = [game_router(plane), v2_router(plane)]
    for router in routers:
        app.include_router(router)
    install_error_handlers(app)
    register_schemas(app, REQUEST_MODELS)
    install_direct_routes(app, routers)
    return app
