"""The NPC tensor layout: actions out, features in, shared by the API, the teacher and the data."""

from __future__ import annotations

ACTIONS = (
    "idle",
    "patrol",
    "investigate",
    "chase",
    "attack",
    "take_cover",
    "flee",
    "reload",
    "call_backup",
    "throw_grenade",
)
MAX_ENEMIES, MAX_ALLIES, MAX_COVER = 3, 2, 2
# Distances are normalised by this range: contacts further away are "far".
SENSE_RANGE_M = 50.0
# Seconds after which "time since the player was seen" saturates.
MEMORY_S = 60.0
FEATURES = (
    "health", "armor", "ammo", "reserve_ammo", "grenades", "threat",
    "since_player_seen", "alert", "under_fire", "in_cover", "heard_noise",
    "objective_distance",
    *(f"enemy{i}_{f}" for i in range(MAX_ENEMIES) for f in ("distance", "sin", "cos", "visible")),
    *(f"ally{i}_{f}" for i in range(MAX_ALLIES) for f in ("distance", "sin", "cos")),
    *(f"cover{i}_{f}" for i in range(MAX_COVER) for f in ("distance", "sin", "cos")),
    "enemies_nearby", "allies_nearby", "aggression", "morale",
)  # fmt: skip
F = {name: i for i, name in enumerate(FEATURES)}
