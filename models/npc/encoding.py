"""An NPC tick to its feature rows and the model's probabilities back to decisions.

This runs on every NPC call, model or fallback, and a tick is small (a game
server sends the NPCs of one server tick, typically tens). At that size numpy's
cost is its per-call overhead, about 0.7 µs a call on this machine, not the
arithmetic: the earlier encoder, array operations over the whole tick (a
lexsort of contacts, their slots by cumulative counts), made some 25 calls and
cost twice this one (``benchmarks/reference/hot-path.txt``). So each NPC's raw
values are gathered in one Python pass, nearest contacts first, with empty
slots as constant tuples; one conversion makes the array, and one division and
one cap over the whole matrix normalise every column. ``reference_features``
is the same encoding written plainly per feature, against which a parity test
holds this one.
"""

from __future__ import annotations

import math
from itertools import repeat
from math import cos, radians, sin
from operator import attrgetter

import numpy as np

from models.npc.api import Contact, NpcActRequest, NpcActResponse, NpcDecision, NpcObservation
from models.npc.features import (
    ACTIONS,
    FEATURES,
    MAX_ALLIES,
    MAX_COVER,
    MAX_ENEMIES,
    MEMORY_S,
    SENSE_RANGE_M,
    F,
)

# One NPC's fields in the order the loop below reads them; the first twelve are
# the first twelve features, raw.
_FIELDS = attrgetter(
    "health", "armor", "ammo", "reserve_ammo", "grenades", "threat",
    "seconds_since_player_seen", "alert", "under_fire", "in_cover", "heard_noise",
    "objective_distance_m", "enemies", "allies", "cover", "aggression", "morale",
)  # fmt: skip
_DISTANCE = attrgetter("distance_m")
_WIDTH = len(FEATURES)
# Every feature is its raw value divided by its column's scale, capped at 1.0
# (the request model bounds the raw values from below, and most at 1.0).
_SCALE = np.ones(_WIDTH)
_SCALE[[F["grenades"], F["since_player_seen"]]] = (3.0, MEMORY_S)
_SCALE[[F[name] for name in FEATURES if name.endswith("_distance")]] = SENSE_RANGE_M
_SCALE[[F["enemies_nearby"], F["allies_nearby"]]] = 8.0
# An empty slot reads as "far away, straight ahead, unseen": what is left of a
# kind's slots after k contacts is _EMPTY_<kind>[k].
_FAR = (SENSE_RANGE_M, 0.0, 0.0)
_EMPTY_ENEMIES = [(*_FAR, 0.0) * (MAX_ENEMIES - k) for k in range(MAX_ENEMIES + 1)]
_EMPTY_ALLIES = [_FAR * (MAX_ALLIES - k) for k in range(MAX_ALLIES + 1)]
_EMPTY_COVER = [_FAR * (MAX_COVER - k) for k in range(MAX_COVER + 1)]


def encode_observations(npcs: list[NpcObservation]) -> np.ndarray:
    """The ``(len(npcs), 40)`` float32 feature rows of one tick, in ``FEATURES`` order."""
    raw: list[float] = []
    put = raw.extend
    # A request holds at most as many contacts of a kind as it has slots (the
    # request model's bound); ties in distance keep the order sent (sorted is stable).
    for (
        health, armor, ammo, reserve, grenades, threat, since_seen, alert,
        under_fire, in_cover, heard_noise, objective, enemies, allies, cover,
        aggression, morale,
    ) in map(_FIELDS, npcs):  # fmt: skip
        put((health, armor, ammo, reserve, grenades, threat, since_seen, alert,
             under_fire, in_cover, heard_noise, objective))  # fmt: skip
        if enemies:
            for c in sorted(enemies, key=_DISTANCE) if len(enemies) > 1 else enemies:
                bearing = radians(c.bearing_deg)
                put((c.distance_m, sin(bearing), cos(bearing), c.visible))
        put(_EMPTY_ENEMIES[len(enemies)])
        if allies:
            for c in sorted(allies, key=_DISTANCE) if len(allies) > 1 else allies:
                bearing = radians(c.bearing_deg)
                put((c.distance_m, sin(bearing), cos(bearing)))
        put(_EMPTY_ALLIES[len(allies)])
        if cover:
            for c in sorted(cover, key=_DISTANCE) if len(cover) > 1 else cover:
                bearing = radians(c.bearing_deg)
                put((c.distance_m, sin(bearing), cos(bearing)))
        put(_EMPTY_COVER[len(cover)])
        put((len(enemies), len(allies), aggression, morale))
    x = np.fromiter(raw, np.float64, len(raw)).reshape(len(npcs), _WIDTH)
    x /= _SCALE
    # Capped in float64, then rounded once to float32, as the reference does.
    return np.minimum(x, 1.0, out=np.empty(x.shape, np.float32), casting="same_kind")


def decode_probabilities(request: NpcActRequest, probs: np.ndarray) -> NpcActResponse:
    """One decision per NPC: the likeliest action and every action's probability (6 places).

    Built from the model's own (checked) outputs, so it is constructed, not
    validated again.
    """
    best = probs.argmax(axis=1).tolist()
    wide = probs.astype(np.float64)
    rounded = np.round(wide, 6, out=wide).tolist()
    # Dict literals, not NpcDecision(...) calls: the TypedDict's call costs keyword passing.
    decisions: list[NpcDecision] = [
        {"npc_id": obs.npc_id, "action": ACTIONS[action], "probabilities": row}
        for obs, action, row in zip(
            request.npcs, best, map(dict, map(zip, repeat(ACTIONS), rounded)), strict=True
        )
    ]
    return NpcActResponse.model_construct(decisions=decisions)


def _reference_contacts(contacts: list[Contact], slots: int, with_visibility: bool) -> list[float]:
    nearest = sorted(contacts, key=lambda c: c.distance_m)[:slots]
    values: list[float] = []
    for slot in range(slots):
        if slot < len(nearest):
            c = nearest[slot]
            rad = math.radians(c.bearing_deg)
            values += [min(c.distance_m / SENSE_RANGE_M, 1.0), math.sin(rad), math.cos(rad)]
            if with_visibility:
                values.append(1.0 if c.visible else 0.0)
        else:
            values += [1.0, 0.0, 0.0] + ([0.0] if with_visibility else [])
    return values


def reference_features(obs: NpcObservation) -> list[float]:
    """The 40 features of one observation, written out per NPC: the encoding's definition."""
    return [
        obs.health,
        obs.armor,
        obs.ammo,
        obs.reserve_ammo,
        obs.grenades / 3.0,
        obs.threat,
        min(obs.seconds_since_player_seen / MEMORY_S, 1.0),
        obs.alert,
        float(obs.under_fire),
        float(obs.in_cover),
        float(obs.heard_noise),
        min(obs.objective_distance_m / SENSE_RANGE_M, 1.0),
        *_reference_contacts(obs.enemies, MAX_ENEMIES, with_visibility=True),
        *_reference_contacts(obs.allies, MAX_ALLIES, with_visibility=False),
        *_reference_contacts(obs.cover, MAX_COVER, with_visibility=False),
        min(len(obs.enemies) / 8.0, 1.0),
        min(len(obs.allies) / 8.0, 1.0),
        obs.aggression,
        obs.morale,
    ]
