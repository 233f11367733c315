"""Deadlines from the edge's stamp, the fast use_local refusal, v2's default and key ceilings."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from models.errors import UseLocalError
from serving.dataplane.backend import LocalBackend
from serving.dataplane.game_time import MAX_DEADLINE_MS, edge_received
from serving.dataplane.plane import DataPlane
from serving.protocol.keys import KeyStore
from serving.settings import FamilyServing, ServingSettings

NPC, RANKING = "npc-behavior", "personalization"
WALL = 1_765_000_000.0  # a wall-clock second
NOW = 500.0  # a monotonic second


@pytest.mark.parametrize(
    ("stamp", "received"),
    [
        (f"t={int((WALL - 0.030) * 1e6)}", NOW - 0.030),  # HAProxy's microseconds
        (f"t={int((WALL - 0.030) * 1e3)}", NOW - 0.030),  # milliseconds (APM agents)
        (f"{WALL - 0.030:.3f}", NOW - 0.030),  # seconds, no prefix (nginx's msec)
        (f"t={int((WALL + 5) * 1e6)}", NOW),  # from the future: never later than now
        (f"t={int((WALL - 3600) * 1e6)}", NOW),  # an hour old: clocks out of step
        ("t=soon", NOW),
        ("t=nan", NOW),
        ("", NOW),
        (None, NOW),
    ],
)
def test_the_edge_stamp_only_ever_moves_receipt_earlier(stamp: str | None, received: float) -> None:
    assert edge_received(stamp, NOW, WALL) == pytest.approx(received, abs=1e-6)


def _plane(settings: ServingSettings) -> DataPlane:
    """A plane over two families; admission needs a running loop (its lag probe)."""
    backends = {name: LocalBackend(name, None, None) for name in (NPC, RANKING)}
    return DataPlane(backends, 64, timing=settings.timing)


def test_a_budget_spent_in_the_queues_is_refused_at_once_before_admission() -> None:
    asyncio.run(_a_budget_spent_in_the_queues_is_refused_at_once_before_admission())


async def _a_budget_spent_in_the_queues_is_refused_at_once_before_admission() -> None:
    plane = _plane(ServingSettings())
    queued_since = time.monotonic() - 0.025  # NPC's deadline is 20 ms
    with pytest.raises(UseLocalError, match="spent before the model") as refused:
        plane.admit(NPC, "game", received=queued_since)
    assert (refused.value.status, refused.value.code) == (503, "use_local")
    assert plane.counters.family(NPC).spent_on_arrival == 1
    assert sum(plane.admission.in_flight.values()) == 0  # it took no place
    # the same request with budget left is admitted, from the edge's moment
    call, ticket = plane.admit(NPC, "game", received=time.monotonic() - 0.005)
    with ticket:
        assert 0 < call.deadline.remaining_s() < 0.0151
    # a patient deadline covers the same wait
    plane.admit(NPC, "game", received=queued_since, deadline_ms=200)[1].__exit__()


def test_a_v2_request_without_a_timeout_gets_none_unless_the_family_says_otherwise() -> None:
    asyncio.run(_a_v2_request_without_a_timeout_gets_none_unless_the_family_says_otherwise())


async def _a_v2_request_without_a_timeout_gets_none_unless_the_family_says_otherwise() -> None:
    plane = _plane(ServingSettings())
    call, ticket = plane.admit(NPC, "v2", received=time.monotonic())
    with ticket:
        assert call.deadline.budget_ms == MAX_DEADLINE_MS
    call, ticket = plane.admit(NPC, "v2", received=time.monotonic(), deadline_ms=7)
    with ticket:
        assert call.deadline.budget_ms == 7
    inherit = ServingSettings(families={NPC: FamilyServing(deadline_ms=20, v2_deadline="family")})
    call, ticket = _plane(inherit).admit(NPC, "v2", received=time.monotonic())
    with ticket:
        assert call.deadline.budget_ms == 20


def test_x_priority_above_the_keys_ceiling_is_lowered_to_it_and_counted() -> None:
    asyncio.run(_x_priority_above_the_keys_ceiling_is_lowered_to_it_and_counted())


async def _x_priority_above_the_keys_ceiling_is_lowered_to_it_and_counted() -> None:
    plane = _plane(ServingSettings())
    now = time.monotonic()
    # personalization is best_effort: a plain key may not raise it
    call, ticket = plane.admit(RANKING, "game", received=now, priority="critical")
    ticket.__exit__()
    assert call.priority == "best_effort"
    assert plane.counters.family(RANKING).priority_lowered == 1
    # lowering is always allowed, and uncounted
    call, ticket = plane.admit(NPC, "game", received=now, priority="best_effort")
    ticket.__exit__()
    assert call.priority == "best_effort"
    assert plane.counters.family(NPC).priority_lowered == 0
    # a key whose ceiling is normal may raise personalization that far, no further
    for asked, got in (("normal", "normal"), ("critical", "normal")):
        call, ticket = plane.admit(RANKING, "game", received=now, priority=asked, ceiling="normal")
        ticket.__exit__()
        assert call.priority == got
    assert plane.counters.family(RANKING).priority_lowered == 2


def test_a_keys_ceiling_is_stored_kept_on_rotation_and_admin_may_ask_anything(
    tmp_path: Path,
) -> None:
    store = KeyStore(tmp_path / "keys.json")
    store.create("server", ["infer"])
    store.create("tournament", ["infer"], max_priority="critical")
    store.create("ops", ["admin"])
    store.rotate("tournament")
    records = {r.name: r for r in store.list()}
    assert records["server"].priority_ceiling() is None  # the family's own class
    assert records["tournament"].priority_ceiling() == "critical"
    assert records["ops"].priority_ceiling() == "critical"
