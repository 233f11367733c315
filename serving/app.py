"""The FastAPI application, built from its dependencies, never from globals."""

from __future__ import annotations

from fastapi import FastAPI

from serving.data_plane import DataPlane
from serving.http.errors import install_error_handlers
from serving.http.game_api import game_router
from serving.http.v2 import v2_router


def create_app(plane: DataPlane) -> FastAPI:
    """The whole HTTP surface over one data plane."""
    app = FastAPI(
        title="gameserve",
        description="Gameplay model inference: the game API and the Open Inference Protocol v2.",
    )
    app.include_router(game_router(plane))
    app.include_router(v2_router(plane))
    install_error_handlers(app)
    return app
