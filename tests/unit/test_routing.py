from __future__ import annotations

import random

import numpy as np
import pytest

from models import FAMILIES, trainable_family
from serving.dataplane.rollout_metrics import RESERVOIR, MetricsWindows, Reservoir
from serving.dataplane.routing import CHALLENGER_ROLE, CHAMPION_ROLE, Route, bucket, choose


def test_no_route_means_champion_only() -> None:
    assert choose(None, "player-1", random.Random(0)) == (CHAMPION_ROLE, False)


def test_a_key_keeps_its_version_and_cohorts_only_grow() -> None:
    rng = random.Random(0)
    keys = [f"player-{i}" for i in range(2000)]
    small = Route(challenger_version="2", weight=0.05, salt="rollout-a")
    large = small.model_copy(update={"weight": 0.25})
    in_small = {k for k in keys if choose(small, k, rng)[0] == CHALLENGER_ROLE}
    in_large = {k for k in keys if choose(large, k, rng)[0] == CHALLENGER_ROLE}
    assert in_small <= in_large
    assert 0.03 < len(in_small) / len(keys) < 0.07
    assert 0.21 < len(in_large) / len(keys) < 0.29
    assert all(choose(large, k, rng)[0] == CHALLENGER_ROLE for k in in_large)


def test_salt_picks_a_different_cohort() -> None:
    a = {k for k in map(str, range(1000)) if bucket(k, "a") < 0.1}
    b = {k for k in map(str, range(1000)) if bucket(k, "b") < 0.1}
    assert len(a & b) < 0.5 * len(a)


def test_shadow_mirrors_the_share_asked_for() -> None:
    route = Route(challenger_version="2", weight=0.0, shadow=0.3, salt="s")
    rng = random.Random(1)
    mirrored = [choose(route, f"k{i}", rng)[1] for i in range(5000)]
    assert 0.27 < np.mean(mirrored) < 0.33


def test_windows_merge_and_summarise() -> None:
    replica_a, replica_b, collector = MetricsWindows(), MetricsWindows(), MetricsWindows()
    for latency in range(1, 101):
        replica_a.family("npc-behavior").challenger.record("2", float(latency), divergence=0.1)
    replica_b.family("npc-behavior").challenger.record("2", None, error=True)
    collector.merge(replica_a.drain())
    collector.merge(replica_b.drain())
    summary = collector.family("npc-behavior").summary().challenger
    assert summary.requests == 101
    assert summary.error_rate == 1 / 101
    assert summary.p99_ms is not None
    assert 98 < summary.p99_ms <= 100
    assert summary.divergence == pytest.approx(0.1)
    assert replica_a.families == {}


def test_merged_reservoirs_weigh_what_each_replica_saw() -> None:
    # A busy replica saw 90,000 fast requests, a quiet one 10,000 slow ones; both
    # kept RESERVOIR samples. The merged sample must be ~90% fast, as the traffic
    # was, whichever flushed last (keeping the last samples made it all slow).
    busy, quiet = Reservoir(), Reservoir()
    for _ in range(90_000):
        busy.add(1.0)
    for _ in range(10_000):
        quiet.add(100.0)
    busy.merge(quiet)
    assert busy.seen == 100_000
    assert len(busy.samples) == RESERVOIR
    assert busy.samples.count(100.0) / RESERVOIR == pytest.approx(0.1, abs=0.01)
    assert 1.0 < float(np.percentile(busy.samples, 95)) <= 100.0  # the slow tail is kept


def test_behaviour_divergence_per_family() -> None:
    npc = trainable_family("npc-behavior")
    uniform = {"action_probs": np.full((2, 10), 0.1, np.float32)}
    attack = {"action_probs": np.eye(10, dtype=np.float32)[[4, 4]]}
    assert np.allclose(npc.divergence(uniform, uniform), 0.0)
    assert (npc.divergence(uniform, attack) > 0.5).all()
    broken = {"action_probs": np.array([[0.5] * 10, [np.nan] * 10], np.float32)}
    assert npc.invalid_rows(broken).tolist() == [True, True]
    ranking = FAMILIES["personalization"]
    scores = {"scores": np.arange(20, dtype=np.float32)[None, :]}
    reversed_scores = {"scores": -scores["scores"]}
    assert ranking.divergence(scores, scores).tolist() == [0.0]
    assert ranking.divergence(scores, reversed_scores).tolist() == [1.0]
    tuning = FAMILIES["difficulty-tuning"]
    a = {"quit_probability": np.array([0.1]), "difficulty_adjustment": np.array([0.5])}
    b = {"quit_probability": np.array([0.1]), "difficulty_adjustment": np.array([-0.5])}
    assert tuning.divergence(a, b).tolist() == [0.5]
    assert tuning.invalid_rows({**a, "difficulty_adjustment": np.array([1.5])}).tolist() == [True]
