"""The scripted utility AI a designer would write, and the situations it is taught on.

The NPC network is trained to imitate it (behavior cloning); it is also the
designer-approved behavior to fall back on when a model cannot answer in time.
"""

from __future__ import annotations

import numpy as np

from models.npc.features import ACTIONS, FEATURES, MAX_ALLIES, MAX_ENEMIES, F

# The teacher's softmax temperature: lower is a more decisive script.
TEACHER_TEMPERATURE = 0.3


def teacher_utilities(x: np.ndarray) -> np.ndarray:
    """The scripted utility AI: one utility per action for each row of features."""

    def col(name: str) -> np.ndarray:
        return x[:, F[name]]

    health, ammo, threat = col("health"), col("ammo"), col("threat")
    seen, alert, aggression, morale = (
        col("since_player_seen"),
        col("alert"),
        col("aggression"),
        col("morale"),
    )
    present = (col("enemy0_distance") < 1.0).astype(np.float64)
    visible = col("enemy0_visible")
    near = (1.0 - col("enemy0_distance")) * present
    cover_near = 1.0 - col("cover0_distance")
    ally_near = (col("ally0_distance") < 1.0).astype(np.float64)
    outnumbered = np.clip((col("enemies_nearby") - col("allies_nearby")) * 4.0, 0.0, 1.0)
    low_health = 1.0 / (1.0 + np.exp((health - 0.3) * 15.0))
    empty = 1.0 / (1.0 + np.exp((ammo - 0.12) * 40.0))
    has_reserve = (col("reserve_ammo") > 0.05).astype(np.float64)
    calm = (1.0 - threat) * (1.0 - present)
    crisis = low_health * threat

    utilities = {
        "idle": 1.6 * calm * (1.0 - alert) * (0.3 + seen),
        "patrol": 1.4 * calm * (1.0 - 0.5 * alert),
        "investigate": (1.8 * col("heard_noise") + 1.2 * alert * (1.0 - seen)) * (1.0 - visible),
        "chase": 2.2 * present * (1.0 - visible) * health * (0.4 + aggression),
        "attack": 3.2 * visible * (1.0 - empty) * (0.4 + near) * (1.0 - low_health)
        * (0.5 + aggression),
        "take_cover": 1.6 * col("under_fire") * (1.0 - col("in_cover")) * cover_near
        + 3.4 * crisis * (0.6 + cover_near),
        "flee": 3.8 * crisis * (1.5 - morale),
        "reload": 3.6 * empty * has_reserve * (1.0 - 0.5 * visible) * (1.0 - 0.8 * crisis),
        "call_backup": 2.4 * threat * outnumbered * ally_near * (1.0 - 0.7 * low_health),
        "throw_grenade": 2.6 * (col("grenades") > 0) * visible * col("enemies_nearby") * 4.0
        * (1.0 - near) * (1.0 - low_health),
    }  # fmt: skip
    return np.stack([utilities[action] for action in ACTIONS], axis=1)


def teacher_probabilities(x: np.ndarray) -> np.ndarray:
    logits = teacher_utilities(x) / TEACHER_TEMPERATURE
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return np.asarray(p / p.sum(axis=1, keepdims=True))


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
