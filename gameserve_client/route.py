"""A game API route as the client calls it: its path, request model and answer model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

Req = TypeVar("Req", bound=BaseModel)
Res = TypeVar("Res", bound=BaseModel)


@dataclass(frozen=True)
class Route(Generic[Req, Res]):
    path: str
    request: type[Req]
    answer: type[Res]
