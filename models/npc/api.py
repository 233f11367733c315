"""The NPC game route's JSON: one server tick's observations in, one decision per NPC out."""

from __future__ import annotations

from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from models.contract import RequestModel
from models.npc.features import MAX_ALLIES, MAX_COVER, MAX_ENEMIES, MEMORY_S, SENSE_RANGE_M


class Contact(RequestModel):
    """Something the NPC perceives: an enemy, an ally or a piece of cover."""

    distance_m: float = Field(ge=0, le=10_000, allow_inf_nan=False)
    bearing_deg: float = Field(ge=-360, le=360, allow_inf_nan=False)
    visible: bool = True


class NpcObservation(RequestModel):
    """What one NPC knows this tick."""

    npc_id: str = Field(min_length=1, max_length=128)
    health: float = Field(ge=0, le=1, allow_inf_nan=False, description="0 dead, 1 full")
    armor: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)
    ammo: float = Field(ge=0, le=1, allow_inf_nan=False, description="Magazine fill")
    reserve_ammo: float = Field(default=1.0, ge=0, le=1, allow_inf_nan=False)
    grenades: int = Field(default=0, ge=0, le=3)
    threat: float = Field(ge=0, le=1, allow_inf_nan=False)
    seconds_since_player_seen: float = Field(default=MEMORY_S, ge=0, allow_inf_nan=False)
    alert: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)
    under_fire: bool = False
    in_cover: bool = False
    heard_noise: bool = False
    objective_distance_m: float = Field(default=SENSE_RANGE_M, ge=0, allow_inf_nan=False)
    enemies: list[Contact] = Field(default_factory=list, max_length=MAX_ENEMIES)
    allies: list[Contact] = Field(default_factory=list, max_length=MAX_ALLIES)
    cover: list[Contact] = Field(default_factory=list, max_length=MAX_COVER)
    aggression: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False)
    morale: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False)


class NpcActRequest(RequestModel):
    """All NPCs of one server tick, decided in one call."""

    npcs: list[NpcObservation] = Field(min_length=1)


class NpcDecision(TypedDict):
    # A TypedDict, not a model: a tick's decisions are built by the server from
    # the model's own outputs, and 16 model instances per tick cost more than the
    # model itself (models/npc/encoding.py). The JSON and its schema are the same.
    npc_id: str
    action: str
    probabilities: dict[str, float]


class NpcActResponse(BaseModel):
    decisions: list[NpcDecision]
