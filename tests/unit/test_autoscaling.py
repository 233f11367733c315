"""The queue-depth policy on synthetic contexts: growing, draining, noisy, calendar."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
from ray.serve.config import AutoscalingConfig

from serving.app.autoscaling import (
    IN_SYSTEM_METRIC,
    CalendarEvent,
    Capacity,
    QueueDepthPolicy,
    QueueDepthSettings,
    aggressive,
    autoscaling_config,
    conservative,
    decide,
)
from serving.dataplane.admission import Occupancy

# 20 ms budget / 2 ms per request: a replica holds 10 requests.
NPC = aggressive(min_replicas=1, max_replicas=8)


def run(
    settings: QueueDepthSettings, loads: list[float], start: int = 1, dt: float = 1.0
) -> list[int]:
    """Replica counts after each tick, feeding each decision back as the next count."""
    replicas, counts = start, []
    state: dict[str, Any] = {}
    for tick, load in enumerate(loads):
        replicas, state = decide(settings, replicas, load, tick * dt, state)
        counts.append(replicas)
    return counts


def test_growing_queue_scales_up_at_once_within_bounds() -> None:
    counts = run(NPC, [5, 40, 75, 200, 200])
    assert counts == [1, 4, 8, 8, 8]


def test_conservative_profile_climbs_in_steps_with_cooldown() -> None:
    shop = conservative(min_replicas=1, max_replicas=8)
    counts = run(shop, [200] * 12)
    assert counts[0] == 3  # +2, not straight to 8
    assert counts[:6] == [3, 3, 3, 3, 3, 5]  # 5 s cooldown between steps
    assert max(counts) <= 8


def test_draining_queue_waits_for_calm_then_steps_down_one_at_a_time() -> None:
    counts = run(NPC, [0.0] * 200, start=4)
    assert counts[:29] == [4] * 29  # 30 s of calm before the first replica goes
    assert counts[30] == 3
    assert counts[-1] == 1
    changes = [i for i in range(1, len(counts)) if counts[i] != counts[i - 1]]
    assert all(b - a >= 30 for a, b in itertools.pairwise(changes))


def test_noisy_load_around_a_boundary_does_not_flap() -> None:
    noisy = [25.0 + (10 if i % 2 else -3) for i in range(300)]  # 22..35 requests
    counts = run(NPC, noisy, start=1)
    flips = sum(counts[i] != counts[i - 1] for i in range(1, len(counts)))
    assert counts[-1] == 4
    assert flips <= 2


def test_calendar_event_raises_the_floor_ahead_of_the_spike_and_releases_it() -> None:
    final = CalendarEvent(name="final", start_s=100, end_s=160, min_replicas=6, lead_s=30)
    settings = aggressive(min_replicas=1, max_replicas=8, calendar=[final])
    counts = run(settings, [1.0] * 400)
    assert counts[60] == 1  # before the lead time
    assert counts[75] == 6  # lead time: up before any traffic arrives
    assert counts[150] == 6  # held through the event
    assert counts[-1] == 1  # released afterwards, at the calm pace
    assert counts[175] == 6  # ...not all at once after the end


def test_policy_adapts_serves_context_and_keeps_its_state() -> None:
    @dataclass
    class Context:
        current_num_replicas: int
        total_num_requests: float
        current_time: float
        policy_state: dict[str, Any] = field(default_factory=dict)

    policy = QueueDepthPolicy(**NPC.model_dump())
    replicas, state = policy(Context(1, 55.0, 10.0))
    assert replicas == 6
    replicas, _ = policy(Context(replicas, 0.0, 11.0, state))
    assert replicas == 6  # calm has only just begun


def test_config_is_one_ray_serve_accepts() -> None:
    config = AutoscalingConfig(**autoscaling_config(NPC))
    assert (config.min_replicas, config.max_replicas) == (1, 8)
    assert config.policy.policy_kwargs["latency_budget_ms"] == 20.0


def test_what_replicas_count_themselves_outweighs_serves_ongoing_count() -> None:
    """An ingress answers on its loop: Serve's ongoing count reads ~0 under overload
    while its replicas' own occupancy (requests in them, on average) reads the queue."""

    @dataclass
    class Context:
        current_num_replicas: int
        total_num_requests: float
        current_time: float
        aggregated_metrics: dict[str, dict[str, float]]
        policy_state: dict[str, Any] = field(default_factory=dict)

    policy = QueueDepthPolicy(**NPC.model_dump())
    busy = {IN_SYSTEM_METRIC: {"replica-a": 14.0, "replica-b": 16.0}}
    assert policy(Context(2, 0.0, 1.0, busy))[0] == 3  # 30 in the system, 10 each
    assert policy(Context(2, 45.0, 1.0, busy))[0] == 5  # Serve's count, where it is more


def test_a_ceiling_left_unset_fits_the_capacity_and_never_undercuts_the_floor() -> None:
    free = QueueDepthSettings(min_replicas=2)
    assert free.fitted(Capacity(cpus=6).replicas(1.0)).max_replicas == 6
    assert free.fitted(Capacity(cpus=1).replicas(1.0)).max_replicas == 2
    assert aggressive(max_replicas=3).fitted(16).max_replicas == 3  # set: kept
    # GPU replicas fit by their share of the GPUs, CPU ones a core each.
    assert Capacity(cpus=16, gpus=2).replicas(num_cpus=0.5, num_gpus=0.25) == 8
    assert Capacity(cpus=4).replicas(num_cpus=0.5) == 4


def test_occupancy_is_time_in_the_replica_plus_the_wait_the_loop_lag_adds() -> None:
    now = [0.0]
    occupancy = Occupancy(clock=lambda: now[0])
    for _ in range(100):
        occupancy.add(0.004)  # 100 requests of 4 ms in one second: 0.4 busy
    now[0] = 1.0
    # Each also waited 20 ms for the loop: 2 more requests in the replica on average.
    assert occupancy.read(lag_s=0.02) == pytest.approx(2.4)
    now[0] = 2.0
    assert occupancy.read(lag_s=0.0) == 0.0  # a reading starts the next window


def test_replicas_still_starting_are_not_taken_away_by_a_dip_in_load() -> None:
    """Serve's current_num_replicas counts running replicas only; the policy decides
    from its target, so two replicas starting survive a quiet moment."""

    @dataclass
    class Context:
        current_num_replicas: int  # running
        target_num_replicas: int
        total_num_requests: float
        current_time: float
        policy_state: dict[str, Any] = field(default_factory=dict)

    policy = QueueDepthPolicy(**aggressive(min_replicas=2, max_replicas=4).model_dump())
    target, state = policy(Context(2, 2, 40.0, 0.0))
    assert target == 4
    target, state = policy(Context(2, target, 0.0, 1.0, state))  # two still starting
    assert target == 4  # calm has only begun: the cooldown holds them
    target, _ = policy(Context(4, target, 0.0, 40.0, state))
    assert target == 3  # after 30 s of calm, one goes
