"""Which version answers a request: sticky weighted splits and shadow mirroring.

A routing key (session or player id) hashes to a fixed point in [0, 1). The
challenger takes the keys below its weight, so raising the weight from 5% to
25% only adds players to the challenger: nobody switches back mid-match. The
rollout's salt makes each rollout pick a different cohort.
"""

from __future__ import annotations

import hashlib
import random

from pydantic import BaseModel, Field

CHAMPION_ROLE, CHALLENGER_ROLE = "champion", "challenger"


class Route(BaseModel):
    """Traffic for one family during a rollout; absent means champion only."""

    challenger_version: str
    weight: float = Field(default=0.0, ge=0, le=1, description="Share served by the challenger")
    shadow: float = Field(default=0.0, ge=0, le=1, description="Share mirrored to it, unseen")
    salt: str = Field(default="", description="Per rollout, so cohorts differ between rollouts")
    step: int = Field(default=0, ge=0, description="The rollout step this split stands for")


def bucket(key: str, salt: str) -> float:
    """A stable point in [0, 1) for ``key``: the same on every ingress replica."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose(route: Route | None, key: str | None, rng: random.Random) -> tuple[str, bool]:
    """(role that answers, whether the champion's answer is mirrored to the challenger)."""
    if route is None:
        return CHAMPION_ROLE, False
    point = bucket(key, route.salt) if key else rng.random()
    if point < route.weight:
        return CHALLENGER_ROLE, False
    return CHAMPION_ROLE, rng.random() < route.shadow
