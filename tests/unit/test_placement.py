"""A full cluster: the policy withdraws what no node takes, holds, reports, asks again."""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from serving.app import autoscaling
from serving.app.autoscaling import CAPACITY_REPORT_S, QueueDepthPolicy, aggressive, decide
from serving.app.collector import CAPACITY_REPORT_TTL_S, _Collector
from serving.app.placement import Exhausted, exhausted

# 20 ms budget / 2 ms a request: 10 requests a replica; the load below wants 6.
SETTINGS = aggressive(
    min_replicas=1, max_replicas=8, placement_patience_s=30.0, full_recheck_s=120.0
)
WANTS_SIX = 60.0


def play(loads: list[float], running_at: Any, start: int = 1) -> list[tuple[int, int]]:
    """(target, running) each second; ``running_at(t, target)`` is what the cluster runs."""
    target, seen = start, []
    state: dict[str, Any] = {}
    for t, load in enumerate(loads):
        running = running_at(t, target)
        target, state = decide(SETTINGS, target, load, float(t), state, running=running)
        seen.append((target, running))
    return seen


def test_replicas_no_node_takes_are_withdrawn_after_the_patience_and_held() -> None:
    seen = play([WANTS_SIX] * 100, lambda t, target: min(target, 2))  # room for two
    targets = [target for target, _ in seen]
    assert targets[:30] == [6] * 30  # asked at once; nodes may still be coming
    assert targets[31:] == [2] * 69  # full at two: the four unplaceable asks withdrawn


def test_a_full_cluster_is_asked_again_only_after_the_recheck_never_in_a_loop() -> None:
    seen = play([WANTS_SIX] * 1_800, lambda t, target: min(target, 2))  # half an hour
    targets = [target for target, _ in seen]
    asks = sum(1 for a, b in itertools.pairwise(targets) if b > a)
    # The first ask, then one per patience + recheck (150 s): 12 in 30 minutes, each
    # withdrawn after its patience.
    assert asks == 1_800 // 150 - 1
    assert targets[-1] == 2


def test_nodes_that_keep_coming_never_count_as_a_full_cluster() -> None:
    # One more replica placed every 20 s (under the 30 s patience): slow, not full.
    seen = play([WANTS_SIX] * 200, lambda t, target: min(target, 1 + t // 20))
    assert [target for target, _ in seen] == [6] * 200
    assert seen[-1][1] == 6


def test_a_load_that_fits_ends_it_and_the_next_spike_asks_at_once() -> None:
    loads = [WANTS_SIX] * 60 + [15.0] * 60 + [WANTS_SIX] * 10
    seen = play(loads, lambda t, target: min(target, 2))
    targets = [target for target, _ in seen]
    assert targets[59] == 2  # full
    assert targets[125] == 6  # the second spike: asked again, no recheck to wait for


def test_a_replica_lost_while_full_is_replaced_not_forgotten() -> None:
    # Full at three; at 100 s a node leaves and only two run: the held target stays three.
    seen = play([WANTS_SIX] * 130, lambda t, target: min(target, 3 if t < 100 else 2))
    assert seen[99] == (3, 3)
    assert seen[129] == (3, 2)


@dataclass
class Context:
    current_num_replicas: int
    target_num_replicas: int
    total_num_requests: float
    current_time: float
    policy_state: dict[str, Any] = field(default_factory=dict)
    deployment_name: str = "npc-behavior"


def test_the_policy_reports_a_full_cluster_renews_it_and_clears_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reports: list[tuple[float, Exhausted | None]] = []
    now = [0.0]
    monkeypatch.setattr(
        autoscaling, "_report_capacity", lambda name, report: reports.append((now[0], report))
    )
    policy = QueueDepthPolicy(**SETTINGS.model_dump())
    target, state = 1, dict[str, Any]()
    for t in range(80):
        now[0] = float(t)
        load = WANTS_SIX if t < 70 else 0.0
        target, state = policy(Context(min(target, 2), target, load, now[0], state))
    assert reports[0][1] == Exhausted("npc-behavior", held=2, wanted=6, since=reports[0][0])
    renewals = [at for at, report in reports if report is not None]
    assert all(b - a >= CAPACITY_REPORT_S for a, b in itertools.pairwise(renewals))
    assert len(renewals) == 4  # found at 31 s, renewed until the load fitted at 70 s
    assert reports[-1] == (70.0, None)


def test_the_collector_keeps_a_report_while_renewed_and_metrics_show_it() -> None:
    collector = _Collector()
    report = Exhausted("npc-behavior", held=2, wanted=6, since=time.time())
    collector.set_capacity("npc-behavior", report)
    assert collector.capacity() == {"npc-behavior": report}
    assert collector.snapshot().exhausted == {"npc-behavior": (2, 6)}
    at, _ = collector.exhausted["npc-behavior"]  # a policy gone silent: forgotten
    collector.exhausted["npc-behavior"] = (at - CAPACITY_REPORT_TTL_S, report)
    assert collector.capacity() == {}
    collector.set_capacity("npc-behavior", report)
    collector.set_capacity("npc-behavior", None)
    assert collector.snapshot().exhausted == {}


def test_a_report_is_read_back_from_the_policy_state_it_was_found_in() -> None:
    _, state = decide(SETTINGS, 6, WANTS_SIX, 0.0, {}, running=2)
    assert exhausted("npc-behavior", state) is None  # the wait has only begun
    for t in range(1, 40):
        _, state = decide(SETTINGS, 2 if t > 31 else 6, WANTS_SIX, float(t), state, running=2)
    found = exhausted("npc-behavior", state)
    assert found is not None
    assert dataclasses.astuple(found)[:3] == ("npc-behavior", 2, 6)
