"""A Python client of gameserve's game API: ``Client`` (blocking) and ``AsyncClient``.

It depends on httpx2 and pydantic only: the models and the server are not needed.
"""

from gameserve_client.client import AsyncClient, Client
from gameserve_client.errors import ApiError, ConnectionFailedError
from gameserve_client.grpc_options import grpc_channel_args
from gameserve_client.models import (
    DIFFICULTY_RECOMMEND,
    NPC_ACT,
    PERSONALIZATION_RANK,
    DifficultyRequest,
    DifficultyResult,
    NpcActRequest,
    NpcActResult,
    RankRequest,
    RankResult,
)
from gameserve_client.retry import RetryPolicy
from gameserve_client.route import Route

__all__ = [
    "DIFFICULTY_RECOMMEND",
    "NPC_ACT",
    "PERSONALIZATION_RANK",
    "ApiError",
    "AsyncClient",
    "Client",
    "ConnectionFailedError",
    "DifficultyRequest",
    "DifficultyResult",
    "NpcActRequest",
    "NpcActResult",
    "RankRequest",
    "RankResult",
    "RetryPolicy",
    "Route",
    "grpc_channel_args",
]
