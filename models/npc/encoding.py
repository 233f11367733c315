"""An NPC tick to its feature rows and the model's probabilities back to decisions, in numpy.

This runs on every NPC call, model or fallback, so it is written over the whole
tick at once: the request's values are gathered in one pass of C-level getters
(``attrgetter``), and every normalisation, the sort of contacts by distance
and their placement in slots are array operations over all NPCs together.
Training data never passes through here (it is sampled as feature rows), but
the layout is the one ``features.py`` declares and the teacher reads;
``reference_features`` is the same encoding written per NPC, the plain
statement of it, against which a parity test holds this one.
"""

from __future__ import annotations

import math
from itertools import chain, repeat
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

_SCALARS = attrgetter(
    "health", "armor", "ammo", "reserve_ammo", "grenades", "threat",
    "seconds_since_player_seen", "alert", "under_fire", "in_cover", "heard_noise",
    "objective_distance_m", "aggression", "morale",
)  # fmt: skip
# Where each of those goes, and what it is divided by before the cap at 1.0 (every
# feature lies in [0, 1]: the request model bounds the others there).
_SCALAR_COLUMNS = np.array(
    [F[name] for name in FEATURES[: F["objective_distance"] + 1]] + [F["aggression"], F["morale"]]
)
_SCALAR_SCALE = np.ones(len(_SCALAR_COLUMNS))
_SCALAR_SCALE[[F["grenades"], F["since_player_seen"], F["objective_distance"]]] = (
    3.0, MEMORY_S, SENSE_RANGE_M,
)  # fmt: skip
_LISTS = attrgetter("enemies", "allies", "cover")
_CONTACT = attrgetter("distance_m", "bearing_deg", "visible")
_KINDS = 3
# The distance column of slot s of kind k (enemies, allies, cover) at [k * 3 + s].
_SLOT_COLUMN = np.array(
    [F[f"enemy{s}_distance"] for s in range(MAX_ENEMIES)]
    + [F[f"ally{s}_distance"] if s < MAX_ALLIES else -1 for s in range(MAX_ENEMIES)]
    + [F[f"cover{s}_distance"] if s < MAX_COVER else -1 for s in range(MAX_ENEMIES)]
)
# An empty slot reads as "far away, straight ahead, unseen"; every contact column.
_EMPTY = np.array(
    [1.0, 0.0, 0.0, 0.0] * MAX_ENEMIES + [1.0, 0.0, 0.0] * (MAX_ALLIES + MAX_COVER),
    dtype=np.float32,
)
_CONTACTS = slice(F["enemy0_distance"], F["enemies_nearby"])
_NEARBY = slice(F["enemies_nearby"], F["allies_nearby"] + 1)


def encode_observations(npcs: list[NpcObservation]) -> np.ndarray:
    """The ``(len(npcs), 40)`` float32 feature rows of one tick, in ``FEATURES`` order."""
    n = len(npcs)
    x = np.empty((n, len(FEATURES)), dtype=np.float32)
    raw = np.fromiter(
        chain.from_iterable(map(_SCALARS, npcs)), np.float64, n * len(_SCALAR_COLUMNS)
    )
    x[:, _SCALAR_COLUMNS] = np.minimum(raw.reshape(n, -1) / _SCALAR_SCALE, 1.0)
    x[:, _CONTACTS] = _EMPTY
    lists = list(chain.from_iterable(map(_LISTS, npcs)))  # by NPC, then by kind
    counts = np.fromiter(map(len, lists), np.intp, n * _KINDS)
    x[:, _NEARBY] = np.minimum(counts.reshape(n, _KINDS)[:, :2] / 8.0, 1.0)
    contacts: list[Contact] = list(chain.from_iterable(lists))
    if contacts:
        sort = max(map(len, lists)) > 1
        values = np.fromiter(chain.from_iterable(map(_CONTACT, contacts)), np.float64)
        _place_contacts(x.reshape(-1), counts, values.reshape(len(contacts), 3), sort)
    return x


def _place_contacts(flat: np.ndarray, counts: np.ndarray, contacts: np.ndarray, sort: bool) -> None:
    """Each NPC's contacts, nearest first within their kind, into their slots.

    ``flat`` is the tick's feature rows, flattened; ``contacts`` holds
    (distance, bearing, visible) rows grouped by NPC, then by kind, ``counts``
    how many of each group there are. A request holds at most as many contacts
    of a kind as it has slots (the request model's bound), so each has one.
    """
    group = np.repeat(np.arange(counts.size), counts)  # NPC * 3 + kind
    if sort:  # nearest first within each group, ties in the order sent (lexsort is stable)
        contacts = contacts[np.lexsort((contacts[:, 0], group))]
    slot = np.arange(group.size) - (np.cumsum(counts) - counts)[group]
    kind = group % _KINDS
    at = group // _KINDS * len(FEATURES) + _SLOT_COLUMN[kind * _KINDS + slot]
    radians = np.radians(contacts[:, 1])
    flat[at] = np.minimum(contacts[:, 0] / SENSE_RANGE_M, 1.0)
    flat[at + 1] = np.sin(radians)
    flat[at + 2] = np.cos(radians)
    enemy = kind == 0
    flat[at[enemy] + 3] = contacts[enemy, 2]


def decode_probabilities(request: NpcActRequest, probs: np.ndarray) -> NpcActResponse:
    """One decision per NPC: the likeliest action and every action's probability (6 places).

    Built from the model's own (checked) outputs, so it is constructed, not
    validated again.
    """
    best = probs.argmax(axis=1).tolist()
    rounded = np.round(probs.astype(np.float64), 6).tolist()
    decisions = [
        NpcDecision(npc_id=obs.npc_id, action=ACTIONS[action], probabilities=row)
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
