"""The game API: JSON requests in a game's own terms, one route per family that offers one.

Each route comes from its family's declaration (``ModelFamily.game_route``, its
request and response models): serving names no family.
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, create_model

from models.errors import ModelNotFoundError
from models.family import GameRoute
from serving.dataplane.game_time import Answer, Call, FallbackReason, FamilyCounts, Source
from serving.dataplane.plane import DataPlane
from serving.http.direct import Endpoint
from serving.http.guard import admit
from serving.http.json_body import body_schema, parse, respond
from serving.protocol.terms import routing_key_of


class ModelRef(BaseModel):
    """Which model version answered: game servers log it with the decision."""

    name: str
    version: str | None = Field(description="None when the fallback answered.")


@functools.cache
def result_model(route: GameRoute[Any, Any]) -> type[BaseModel]:
    """The route's response plus who answered (``NpcActResult``...)."""
    name = route.response_model.__name__.removesuffix("Response") + "Result"
    return create_model(
        name,
        __base__=route.response_model,
        model=(ModelRef, ...),
        source=(
            Source,
            Field(
                description="'model': the model answered in time. 'fallback': the "
                "family's designer-approved fallback did, for fallback_reason."
            ),
        ),
        fallback_reason=(
            FallbackReason | None,
            Field(
                default=None,
                description="Why the fallback answered: deadline (the model could not "
                "answer in time), overload, error (the model failed), invalid_output.",
            ),
        ),
    )


class GameTimeCounts(BaseModel):
    """Since the stack started, over every replica."""

    fallbacks: dict[str, int] = Field(description="Answers by the fallback, by reason.")
    errors_on_miss: dict[str, int] = Field(
        description="Errors instead (on_miss 'error', or no fallback declared), by reason."
    )
    expired: int = Field(description="Requests dropped unrun: their deadline had passed.")
    late: int = Field(description="Model answers that came after their deadline.")
    shed: dict[str, int] = Field(description="Requests refused at admission, by class.")
    spent_on_arrival: int = Field(
        description="Refused at once (use_local): the deadline was spent in the queues "
        "before the replica read the request."
    )
    priority_lowered: int = Field(
        description="Requests whose X-Priority was above their key's ceiling, lowered to it."
    )


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
    deadline_ms: float = Field(description="A request's deadline when it sends none.")
    priority: str = Field(description="Its class under overload, unless X-Priority says.")
    fallback: str | None = Field(description="What answers when the model cannot; None: errors.")
    game_time: GameTimeCounts


class ModelList(BaseModel):
    models: list[ServedModel]


def routing_key(request: Request, fallback: str | None = None) -> str | None:
    """The id that keeps a match or player on one version during a rollout."""
    return routing_key_of(request.headers) or fallback


def game_routes(plane: DataPlane) -> dict[str, GameRoute[Any, Any]]:
    """By family: the game routes of the families this plane serves that offer one."""
    families = (plane.family(name) for name in sorted(plane.backends))
    return {f.name: f.game_route for f in families if f.game_route is not None}


def request_models(plane: DataPlane) -> list[type[BaseModel]]:
    """Request models the game routes parse themselves (json_body.py), for OpenAPI."""
    return [route.request_model for route in game_routes(plane).values()]


def game_router(plane: DataPlane) -> APIRouter:
    router = APIRouter(prefix="/v1")
    for name, route in game_routes(plane).items():
        result = result_model(route)
        # A per-tick route parses its own body, so it is served directly (direct.py).
        router.post(
            route.path,
            tags=["game"],
            response_model=result,
            openapi_extra=body_schema(route.request_model),
        )(_endpoint(plane, name, route, result))
    _add_model_list(router, plane)
    return router


def _endpoint(
    plane: DataPlane, name: str, route: GameRoute[Any, Any], result: type[BaseModel]
) -> Endpoint:
    pick = route.routing_key

    async def endpoint(http: Request) -> Response:
        call, ticket = admit(plane, http, name, "game")
        with ticket, plane.observe(name, call.received) as seen:
            request = parse(route.request_model, await http.body())
            key = routing_key(http, pick(request) if pick is not None else None)
            response, answer = await answer_game_request(plane, name, request, key, call)
            seen.answered(answer)
        return respond(
            result(
                model=ModelRef(name=name, version=answer.version),
                **answer.provenance(),
                **dict(response),
            )
        )

    endpoint.__name__ = route.path.strip("/").replace("/", "_")  # the OpenAPI operation
    endpoint.__doc__ = route.summary
    return endpoint


async def answer_game_request(
    plane: DataPlane,
    name: str,
    request: BaseModel,
    routing_key: str | None = None,
    call: Call | None = None,
) -> tuple[Any, Answer]:
    """A game API request through the data plane: encode, infer, decode."""
    family = plane.family(name)
    route = family.game_route
    if route is None:
        raise ModelNotFoundError(f"model {name!r} has no game route")
    answer = await plane.infer(
        name, family.encode(request), field=route.batch_field, routing_key=routing_key,
        call=call, row_keys=route.row_keys(request) if route.row_keys else None,
    )  # fmt: skip
    return family.decode(request, answer.outputs), answer


async def game_time_counts(plane: DataPlane, name: str) -> FamilyCounts:
    """What game time did to ``name``'s requests: shipped totals plus this replica's rest."""
    counts = FamilyCounts()
    if plane.shipped_counts is not None:
        shipped = await plane.shipped_counts()
        if name in shipped:
            counts.add(shipped[name])
    if name in plane.counters.families:
        counts.add(plane.counters.families[name])
    return counts


def _add_model_list(router: APIRouter, plane: DataPlane) -> None:
    @router.get("/models", tags=["operations"])
    async def list_models() -> ModelList:
        """Every family: the version serving it, its replicas and its game-time terms and counts."""
        return ModelList(models=[await _served(plane, name) for name in sorted(plane.backends)])


async def _served(plane: DataPlane, name: str) -> ServedModel:
    status = await plane.status(name)
    timing = plane.timing(name)
    counts = await game_time_counts(plane, name)
    return ServedModel(
        name=status.family,
        version=status.version,
        ready=status.ready,
        replicas=status.replicas,
        device=status.device,
        healthy=status.problem is None,
        problem=status.problem,
        deadline_ms=timing.deadline_ms,
        priority=timing.priority,
        fallback=plane.family(name).fallback_policy,
        game_time=GameTimeCounts.model_validate(counts.as_dict()),
    )
