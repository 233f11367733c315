"""The game API: JSON requests in a game's own terms, one route per family."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from models.difficulty import DifficultyRequest, DifficultyResponse
from models.npc import NpcActRequest, NpcActResponse
from models.personalization import RankRequest, RankResponse
from serving.data_plane import DataPlane


class ModelRef(BaseModel):
    """Which model version answered: game servers log it with the decision."""

    name: str
    version: str


class NpcActResult(NpcActResponse):
    model: ModelRef


class DifficultyResult(DifficultyResponse):
    model: ModelRef


class RankResult(RankResponse):
    model: ModelRef


class ServedModel(BaseModel):
    name: str
    version: str | None
    ready: bool
    replicas: int
    device: str


class ModelList(BaseModel):
    models: list[ServedModel]


ROUTING_HEADERS = ("x-session-id", "x-player-id")


def routing_key(request: Request, fallback: str | None = None) -> str | None:
    """The id that keeps a match or player on one version during a rollout."""
    for header in ROUTING_HEADERS:
        if value := request.headers.get(header):
            return value
    return fallback


def game_router(plane: DataPlane) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/npc/act", tags=["game"])
    async def npc_act(request: NpcActRequest, http: Request) -> NpcActResult:
        """Decide the next action of every NPC in one server tick.

        Send ``X-Session-Id`` (the match) so a match stays on one model version.
        """
        name = "npc-behavior"
        response, version = await plane.infer_domain(name, request, routing_key(http))
        return NpcActResult(model=ModelRef(name=name, version=version), **dict(response))

    @router.post("/difficulty/recommend", tags=["game"])
    async def difficulty_recommend(request: DifficultyRequest, http: Request) -> DifficultyResult:
        """Quit risk and a difficulty adjustment for each player."""
        name = "difficulty-tuning"
        key = routing_key(http, request.players[0].player_id)
        response, version = await plane.infer_domain(name, request, key)
        return DifficultyResult(model=ModelRef(name=name, version=version), **dict(response))

    @router.post("/personalization/rank", tags=["game"])
    async def personalization_rank(request: RankRequest, http: Request) -> RankResult:
        """Top-k of the candidate items supplied, best first."""
        name = "personalization"
        key = routing_key(http, request.player_id)
        response, version = await plane.infer_domain(name, request, key)
        return RankResult(model=ModelRef(name=name, version=version), **dict(response))

    @router.get("/models", tags=["operations"])
    async def list_models() -> ModelList:
        """Every family, the version serving it and its replica count."""
        statuses = [await plane.status(name) for name in sorted(plane.backends)]
        return ModelList(
            models=[
                ServedModel(
                    name=s.family,
                    version=s.version,
                    ready=s.ready,
                    replicas=s.replicas,
                    device=s.device,
                )
                for s in statuses
            ]
        )

    return router
