from __future__ import annotations

import pickle

import numpy as np
import pytest

from models.errors import DeadlineExceededError
from serving.dataplane.game_time import Answer
from serving.dataplane.telemetry import Histogram, Observation, Telemetry


def test_latency_buckets_resolve_one_millisecond_up_to_a_tick() -> None:
    telemetry = Telemetry()
    for ms in (0.4, 1.0, 1.2, 7.9, 19.5, 20.0, 20.1, 9000):
        telemetry.record("npc", "3", "champion", "ok", ms / 1000, 1)
    cumulative = dict(telemetry.latency_s[("npc", "3", "champion")].cumulative())
    assert (cumulative["0.001"], cumulative["0.002"], cumulative["0.008"]) == (2, 3, 4)
    assert (cumulative["0.02"], cumulative["0.025"], cumulative["+Inf"]) == (6, 7, 8)


def test_drain_and_merge_lose_nothing_and_survive_pickling() -> None:
    replica, collector = Telemetry(), Telemetry()
    for rows in (1, 16, 16, 300):
        replica.record("npc", "3", "champion", "ok", 0.002, rows)
    replica.record("npc", None, "none", "invalid_input", 0.0001, 0)
    collector.merge(pickle.loads(pickle.dumps(replica.drain())))
    assert not replica
    replica.record("npc", "3", "champion", "ok", 0.002, 16)
    collector.merge(replica.drain())
    assert collector.requests[("npc", "3", "champion", "ok")] == 5
    assert collector.requests[("npc", "", "none", "invalid_input")] == 1
    counted: Histogram = collector.rows[("npc", "3", "champion")]
    assert (counted.count, counted.total) == (5, 349)
    assert ("npc", "", "none") not in collector.rows  # a failed request has no rows


def test_observation_records_the_error_code_and_the_gauge_returns_to_zero() -> None:
    telemetry = Telemetry()

    def failing(error: Exception) -> None:
        with Observation(telemetry, "npc", 0.0):
            assert telemetry.in_flight["npc"] == 1
            raise error

    with pytest.raises(DeadlineExceededError):
        failing(DeadlineExceededError("late"))
    with pytest.raises(RuntimeError):
        failing(RuntimeError("a bug"))
    with Observation(telemetry, "npc", 0.0) as seen:
        seen.answered(Answer({"probs": np.zeros((8, 10))}, "2", challenger=True))
    assert telemetry.in_flight["npc"] == 0
    assert telemetry.requests[("npc", "", "none", "deadline_exceeded")] == 1
    assert telemetry.requests[("npc", "", "none", "internal_error")] == 1
    assert telemetry.requests[("npc", "2", "challenger", "ok")] == 1
