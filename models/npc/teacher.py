"""The scripted utility AI a designer would write, and the situations it is taught on.

The NPC network is trained to imitate it (behavior cloning); it is also the
designer-approved behavior to fall back on when a model cannot answer in time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.npc.features import ACTIONS, FEATURES, MAX_ALLIES, MAX_ENEMIES, F

# The teacher's softmax temperature: lower is a more decisive script.
TEACHER_TEMPERATURE = 0.3
# What each action is worth where its conditions (below) fully hold.
ACTION_WEIGHTS = {
    "idle": 1.6, "patrol": 1.4, "investigate": 1.2, "chase": 2.2, "attack": 3.2,
    "take_cover": 1.6, "flee": 3.8, "reload": 3.6, "call_backup": 2.4, "throw_grenade": 10.4,
}  # fmt: skip
# Applied with the temperature in one multiplication over all actions.
_WEIGHTS = np.array([[ACTION_WEIGHTS[action]] for action in ACTIONS])
_LOGIT_SCALE = _WEIGHTS / TEACHER_TEMPERATURE
# Up to this many rows the script runs row by row on Python floats, beyond it on
# numpy columns. Its 70-odd operations cost about 8 µs a row on floats, and about
# 70 µs a tick as numpy calls whatever the rows (a call costs about 1 µs on a
# tick's few rows); they cross near 7 rows on this machine. A single NPC's
# fallback is the common case under load, and five times cheaper row by row.
ROW_BY_ROW_MAX = 6
# A value of the script: one float (row by row) or one array over the rows.
Value = Any


@dataclass(frozen=True)
class _Arithmetic:
    exp: Callable[[Value], Value]
    minimum: Callable[[Value, Value], Value]
    maximum: Callable[[Value, Value], Value]


_ON_FLOATS = _Arithmetic(math.exp, min, max)
_ON_ARRAYS = _Arithmetic(np.exp, np.minimum, np.maximum)


def _script(
    col: Callable[[str], Value], lack: Callable[[str], Value], on: _Arithmetic
) -> list[Value]:
    """How fully each action's conditions hold, in ``ACTIONS`` order.

    ``col(feature)`` is the feature's value, ``lack(feature)`` one minus it;
    written once for floats and for arrays (comparisons give booleans, which
    count as 1.0 and 0.0 in the products).
    """
    health, threat, alert, visible = (
        col("health"),
        col("threat"),
        col("alert"),
        col("enemy0_visible"),
    )
    present = col("enemy0_distance") < 1.0
    near = lack("enemy0_distance") * present
    cover_near = lack("cover0_distance")
    outnumbered = on.minimum(
        on.maximum(col("enemies_nearby") - col("allies_nearby"), 0.0) * 4.0, 1.0
    )
    low_health = 1.0 / (1.0 + on.exp((health - 0.3) * 15.0))
    empty = 1.0 / (1.0 + on.exp((col("ammo") - 0.12) * 40.0))
    calm = lack("threat") * (1.0 - present)
    crisis = low_health * threat
    healthy = 1.0 - low_health

    # Within an action, a second term's factor is relative to the action's weight.
    conditions = {
        "idle": calm * lack("alert") * (0.3 + col("since_player_seen")),
        "patrol": calm * (1.0 - 0.5 * alert),
        "investigate": (1.5 * col("heard_noise") + alert * lack("since_player_seen"))
        * lack("enemy0_visible"),
        "chase": present * lack("enemy0_visible") * health * (0.4 + col("aggression")),
        "attack": visible * (1.0 - empty) * (0.4 + near) * healthy * (0.5 + col("aggression")),
        "take_cover": col("under_fire") * lack("in_cover") * cover_near
        + 2.125 * crisis * (0.6 + cover_near),
        "flee": crisis * (1.5 - col("morale")),
        "reload": empty * (col("reserve_ammo") > 0.05) * (1.0 - 0.5 * visible)
        * (1.0 - 0.8 * crisis),
        "call_backup": threat * outnumbered * (col("ally0_distance") < 1.0)
        * (1.0 - 0.7 * low_health),
        "throw_grenade": (col("grenades") > 0) * visible * col("enemies_nearby")
        * (1.0 - near) * healthy,
    }  # fmt: skip
    return [conditions[action] for action in ACTIONS]


def _on_row(row: list[float]) -> list[Value]:
    named = dict(zip(FEATURES, row, strict=True))
    return _script(named.__getitem__, lambda feature: 1.0 - named[feature], _ON_FLOATS)


def _conditions(x: np.ndarray) -> np.ndarray:
    """The script over the rows of ``x``: ``(len(ACTIONS), len(x))``, one row per action."""
    if len(x) <= ROW_BY_ROW_MAX:
        return np.array(list(map(_on_row, x.tolist())), np.float64).T
    v = x.T.astype(np.float64)  # one contiguous row per feature
    inverse = 1.0 - v
    return np.array(_script(lambda f: v[F[f]], lambda f: inverse[F[f]], _ON_ARRAYS), np.float64)


def teacher_utilities(x: np.ndarray) -> np.ndarray:
    """The scripted utility AI: one utility per action for each row of features."""
    by_action = _conditions(x)
    by_action *= _WEIGHTS
    return by_action.T


def teacher_probabilities(x: np.ndarray) -> np.ndarray:
    """The teacher's softmax over its utilities (float64), one row per row of ``x``."""
    logits = _conditions(x)
    logits *= _LOGIT_SCALE
    logits -= logits.max(axis=0)
    p: np.ndarray = np.exp(logits, out=logits)
    p /= p.sum(axis=0)
    return p.T


def sample_observations(n: int, rng: np.random.Generator) -> np.ndarray:
    """Plausible NPC situations, covering calm, combat and crisis."""
    x = np.zeros((n, len(FEATURES)), dtype=np.float32)
    x[:, F["health"]] = rng.beta(1.4, 1.0, n)
    x[:, F["armor"]] = rng.uniform(0, 1, n) * (rng.random(n) < 0.6)
    x[:, F["ammo"]] = np.where(rng.random(n) < 0.2, rng.uniform(0, 0.12, n), rng.uniform(0, 1, n))
    x[:, F["reserve_ammo"]] = np.where(rng.random(n) < 0.15, 0.0, rng.uniform(0, 1, n))
    x[:, F["grenades"]] = rng.integers(0, 4, n) / 3.0
    enemies = rng.choice(np.arange(MAX_ENEMIES + 1), n, p=[0.35, 0.3, 0.2, 0.15])
    for slot, (dist, base) in enumerate(
        zip(
            np.sort(rng.uniform(0.03, 0.97, (n, MAX_ENEMIES)), axis=1).T,
            range(12, 24, 4),
            strict=True,
        )
    ):
        here = enemies > slot
        bearing = rng.uniform(-np.pi, np.pi, n)
        x[:, base] = np.where(here, dist, 1.0)
        x[:, base + 1] = np.where(here, np.sin(bearing), 0.0)
        x[:, base + 2] = np.where(here, np.cos(bearing), 0.0)
        x[:, base + 3] = here & (rng.random(n) < 0.6)
    allies = rng.integers(0, MAX_ALLIES + 1, n)
    for kind, count, base in (("ally", allies, 24), ("cover", rng.integers(0, 3, n), 30)):
        del kind
        for slot in range(2):
            here = count > slot
            bearing = rng.uniform(-np.pi, np.pi, n)
            col = base + 3 * slot
            x[:, col] = np.where(here, rng.uniform(0.02, 0.9, n), 1.0)
            x[:, col + 1] = np.where(here, np.sin(bearing), 0.0)
            x[:, col + 2] = np.where(here, np.cos(bearing), 0.0)
    visible_any = x[:, [15, 19, 23]].max(axis=1)
    under_fire = (enemies > 0) & (rng.random(n) < 0.5 * visible_any + 0.05)
    x[:, F["under_fire"]] = under_fire
    x[:, F["in_cover"]] = rng.random(n) < 0.25
    x[:, F["heard_noise"]] = rng.random(n) < 0.2
    threat = 0.22 * enemies + 0.3 * (1 - x[:, F["enemy0_distance"]]) + 0.3 * under_fire
    x[:, F["threat"]] = np.clip(threat + rng.normal(0, 0.08, n), 0, 1)
    # Crises are rare in play but are where a wrong action shows most; oversample them.
    crisis = rng.random(n) < 0.1
    x[crisis, F["health"]] = rng.uniform(0.0, 0.25, int(crisis.sum()))
    x[crisis, F["threat"]] = rng.uniform(0.7, 1.0, int(crisis.sum()))
    x[:, F["since_player_seen"]] = np.where(visible_any > 0, 0.0, rng.uniform(0, 1, n))
    x[:, F["alert"]] = np.clip(0.5 * (enemies > 0) + rng.uniform(0, 0.6, n), 0, 1)
    x[:, F["objective_distance"]] = rng.uniform(0, 1, n)
    x[:, F["enemies_nearby"]] = np.minimum(enemies + rng.integers(0, 3, n) * (enemies > 0), 8) / 8
    x[:, F["allies_nearby"]] = np.minimum(allies + rng.integers(0, 2, n) * (allies > 0), 8) / 8
    x[:, F["aggression"]] = rng.uniform(0, 1, n)
    x[:, F["morale"]] = rng.uniform(0, 1, n)
    return x
