"""The game API: JSON requests in a game's own terms, one route per family."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from models.difficulty import DifficultyRequest, DifficultyResponse
from models.npc import NpcActRequest, NpcActResponse
from models.personalization import RankRequest, RankResponse
from serving.data_plane import DataPlane
from serving.http.direct import Endpoint
from serving.http.json_body import body_schema, parse, respond


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
    ready: bool = Field(description="Some replica answers for it.")
    replicas: int = Field(description="Replicas running.")
    device: str
    healthy: bool = Field(
        description="Every replica it should have is running; false while one cannot "
        "start (for example a replacement that cannot load its model), even though "
        "the others keep answering."
    )
    problem: str | None = Field(
        description="Why a replica is not running, as the platform reports it."
    )


class ModelList(BaseModel):
    models: list[ServedModel]


ROUTING_HEADERS = ("x-session-id", "x-player-id")


def routing_key(request: Request, fallback: str | None = None) -> str | None:
    """The id that keeps a match or player on one version during a rollout."""
    for header in ROUTING_HEADERS:
        if value := request.headers.get(header):
            return value
    return fallback


# Request models the game routes parse themselves (serving/http/json_body.py);
# the app adds them to its OpenAPI document.
REQUEST_MODELS: list[type[BaseModel]] = [NpcActRequest, DifficultyRequest, RankRequest]


def game_router(plane: DataPlane) -> APIRouter:
    router = APIRouter(prefix="/v1")

    def game_route(
        path: str, request_model: type[BaseModel], result: type[BaseModel]
    ) -> Callable[[Endpoint], Endpoint]:
        """A per-tick route: it parses its own body (json_body.py), so it is served directly."""
        return router.post(
            path, tags=["game"], response_model=result, openapi_extra=body_schema(request_model)
        )

    async def answer(
        name: str, request: BaseModel, key: str | None, result: type[BaseModel]
    ) -> Response:
        response, version = await plane.infer_domain(name, request, key)
        model = ModelRef(name=name, version=version)
        return respond(result(model=model, **dict(response)))

    @game_route("/npc/act", NpcActRequest, NpcActResult)
    async def npc_act(http: Request) -> Response:
        """Decide the next action of every NPC in one server tick.

        Send ``X-Session-Id`` (the match) so a match stays on one model version.
        """
        request = parse(NpcActRequest, await http.body())
        return await answer("npc-behavior", request, routing_key(http), NpcActResult)

    @game_route("/difficulty/recommend", DifficultyRequest, DifficultyResult)
    async def difficulty_recommend(http: Request) -> Response:
        """Quit risk and a difficulty adjustment for each player."""
        request = parse(DifficultyRequest, await http.body())
        key = routing_key(http, request.players[0].player_id)
        return await answer("difficulty-tuning", request, key, DifficultyResult)

    @game_route("/personalization/rank", RankRequest, RankResult)
    async def personalization_rank(http: Request) -> Response:
        """Top-k of the candidate items supplied, best first."""
        request = parse(RankRequest, await http.body())
        key = routing_key(http, request.player_id)
        return await answer("personalization", request, key, RankResult)

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
                    healthy=s.problem is None,
                    problem=s.problem,
                )
                for s in statuses
            ]
        )

    return router
