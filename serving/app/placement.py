"""A full cluster, found by the replicas it does not place.

A replica the policy asks for waits for a node: the autoscaler adds one (a
node's start, then the replica's), or the cluster is at its node limit, or the
cloud has no node of that kind to give. Those look the same from Serve's side,
and the policy must not wait on the last two forever: the asks stay pending,
the autoscaler keeps trying to launch what it cannot, and nothing says so
(peers get exactly this wrong: a planner that hangs when no GPU is free,
replicas added while pods are pending). So the policy counts how long its
target has stood above the running replicas with none added. Past
``placement_patience_s`` the cluster is full at what runs: the target is held
there (the unplaceable asks withdrawn), the edge sheds and the fallbacks answer
what it cannot take, and the collector reports it. After ``full_recheck_s``
the policy asks once more (a spot market may have capacity again); a spike
that ends clears it at once.

Pure functions of the policy's state dict (Serve keeps it between ticks), so
they are tested without Ray; ``serving.app.autoscaling.decide`` calls them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Prefixed like the policy's other keys, so they never collide with Serve's.
_SHORT_SINCE, _SHORT_RUNNING = "gameserve_short_since", "gameserve_short_running"
_FULL_AT, _FULL_SINCE = "gameserve_full_at", "gameserve_full_since"
_FULL_WANTED = "gameserve_full_wanted"


@dataclass(frozen=True)
class Exhausted:
    """A deployment whose cluster holds no more of its replicas: what crosses from the
    policy (in Serve's controller) to the collector, and from there to /metrics."""

    deployment: str
    held: int  # replicas running, where the policy holds its target
    wanted: int  # what the load asked for when the cluster was found full
    since: float  # unix time


def watch_placement(
    state: dict[str, Any], target: int, running: int, wanted: int, now: float, patience_s: float
) -> None:
    """Note in ``state`` whether ``target`` replicas outrun ``running`` ones with none
    added for ``patience_s``; past that, the cluster is full at ``running`` (while the
    load asks for ``wanted``)."""
    if running >= target:
        state.pop(_SHORT_SINCE, None)
        state.pop(_SHORT_RUNNING, None)
        return
    # Any change in what runs (a node came, or one left) starts the wait again.
    if state.get(_SHORT_RUNNING) != running:
        state[_SHORT_SINCE], state[_SHORT_RUNNING] = now, running
        return
    if _FULL_AT not in state and now - state[_SHORT_SINCE] >= patience_s:
        state[_FULL_AT], state[_FULL_SINCE], state[_FULL_WANTED] = running, now, wanted


def held_ceiling(state: dict[str, Any], wanted: int, now: float, recheck_s: float) -> int | None:
    """Where the policy holds its target while the cluster is full (None: it is not).

    A load that fits what runs ends it; so does ``recheck_s``, after which the
    policy asks again and waits its patience once more."""
    full_at = state.get(_FULL_AT)
    if full_at is None:
        return None
    if wanted <= full_at or now - state[_FULL_SINCE] >= recheck_s:
        for key in (_FULL_AT, _FULL_SINCE, _FULL_WANTED, _SHORT_SINCE, _SHORT_RUNNING):
            state.pop(key, None)
        return None
    return int(full_at)


def exhausted(deployment: str, state: dict[str, Any]) -> Exhausted | None:
    """The report of a full cluster, if ``state`` holds one."""
    if _FULL_AT not in state:
        return None
    return Exhausted(
        deployment, int(state[_FULL_AT]), int(state[_FULL_WANTED]), float(state[_FULL_SINCE])
    )
