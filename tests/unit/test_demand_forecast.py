"""Predictive pre-scaling on a synthetic week: the floor rises before the evening peak."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from serving.app.autoscaling import FORECAST_FLOOR_METRIC, QueueDepthPolicy
from serving.app.collector import _Collector
from serving.app.demand_forecast import (
    ForecastSettings,
    RateHistory,
    forecast_floor,
    forecast_rates,
)
from serving.dataplane.telemetry import Telemetry
from serving.settings import ServingSettings

BUCKET_S = 600.0  # 10-minute rate buckets
DAY = 144
CAPACITY = 50.0  # requests/s one replica serves within its latency budget
JOIN_BUCKETS = 1  # a new replica (a GPU node joining) serves 10 minutes after it is asked for
MAX_REPLICAS = 20
SETTINGS = ForecastSettings(
    bucket_s=BUCKET_S, lead_s=2 * BUCKET_S, requests_per_replica_s=CAPACITY, headroom=1.2
)


def synthetic_weeks(days: int, seed: int = 3) -> np.ndarray:
    """Requests/s per bucket: a quiet day, an evening peak at 20:00, busier weekends."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    hour = (t % DAY) * 24 / DAY
    evening = np.exp(-((hour - 20.0) ** 2) / (2 * 1.5**2))
    weekend = 1.0 + 0.3 * ((t // DAY) % 7 >= 5)
    return np.maximum((40 + 500 * evening) * weekend + rng.normal(0, 10, len(t)), 0.0)


def needed(rate: float) -> int:
    return min(max(math.ceil(rate / CAPACITY), 1), MAX_REPLICAS)


def test_the_forecast_learns_the_daily_season() -> None:
    week = synthetic_weeks(8)
    history, actual = week[: 7 * DAY], week[7 * DAY : 8 * DAY]
    rates, method = forecast_rates(history, DAY, DAY)
    assert method == "holt-winters"
    peak = int(actual.argmax())
    assert abs(int(rates.argmax()) - peak) <= 2  # the peak's time, within 20 minutes
    assert abs(rates[peak] - actual[peak]) / actual[peak] < 0.15
    assert forecast_rates(history[:DAY], DAY, 3)[1] == "seasonal-naive"
    assert forecast_rates([], DAY, 3)[0].tolist() == [0.0, 0.0, 0.0]


def test_the_floor_rises_before_the_peak_and_saves_queueing_over_reactive_scaling() -> None:
    week = synthetic_weeks(8)
    start = 7 * DAY  # a week learned; the 8th day is simulated bucket by bucket
    load = week[start : start + DAY]
    floors = np.zeros(DAY, dtype=int)
    every = 36  # refitted every 6 hours: a fit takes a moment
    for fit_at in range(0, DAY, every):
        history = week[: start + fit_at]
        ahead_s = (every + SETTINGS.horizon) * BUCKET_S
        ahead = forecast_floor(history, SETTINGS.model_copy(update={"lead_s": ahead_s}), 1, 20)
        for offset in range(every):  # each bucket's floor: the peak of its own lead window
            window = ahead.rates[offset : offset + SETTINGS.horizon]
            floors[fit_at + offset] = min(
                max(math.ceil(window.max() * SETTINGS.headroom / CAPACITY), 1), MAX_REPLICAS
            )
    asked_reactive = np.array([needed(rate) for rate in load])
    asked_predictive = np.maximum(asked_reactive, floors)
    # What serves at t is what was asked for JOIN_BUCKETS earlier.
    serving_reactive = np.concatenate(
        [asked_reactive[:JOIN_BUCKETS], asked_reactive[:-JOIN_BUCKETS]]
    )
    serving_predictive = np.concatenate(
        [asked_predictive[:JOIN_BUCKETS], asked_predictive[:-JOIN_BUCKETS]]
    )
    queued_reactive = BUCKET_S * float((load > serving_reactive * CAPACITY).sum())
    queued_predictive = BUCKET_S * float((load > serving_predictive * CAPACITY).sum())
    peak = int(load.argmax())
    enough = needed(load[peak])
    floor_ready = int(np.flatnonzero(floors >= enough)[0])
    reactive_ready = int(np.flatnonzero(asked_reactive >= enough)[0])
    print(
        f"\nqueueing above target on the simulated day: reactive {queued_reactive:.0f} s, "
        f"predictive {queued_predictive:.0f} s ({queued_reactive - queued_predictive:.0f} s "
        f"saved); the peak's {enough} replicas asked for {(peak - floor_ready) * 10} min "
        f"before it (reactive: {(peak - reactive_ready) * 10} min)"
    )
    assert floor_ready <= peak - SETTINGS.horizon  # raised before the peak, not after
    assert floor_ready < reactive_ready
    assert queued_predictive < queued_reactive / 2


def test_the_rate_history_buckets_wall_time_and_counts_quiet_buckets_as_zero() -> None:
    history = RateHistory(bucket_s=10.0, keep=4)
    history.add(50, now=1000.0)
    history.add(50, now=1009.0)
    assert history.rates() == []  # the first bucket is still open
    history.add(20, now=1031.0)  # closes 1000 (100 requests), 1010 and 1020 (none)
    assert history.rates() == [10.0, 0.0, 0.0]
    assert history.closed == 3
    history.add(1, now=1045.0)
    history.add(1, now=1055.0)
    assert history.rates() == [0.0, 0.0, 2.0, 0.1]  # only the last four are kept
    history.add(1, now=5000.0)  # a gap longer than the history starts it over
    assert history.rates() == []


def test_the_collector_forecasts_from_what_the_replicas_report_and_answers_the_floor() -> None:
    """The collector's side of the wiring: telemetry in, the floor out with every answer,
    remade as buckets close; the ingress relays it to the policy as a floor."""
    settings = ForecastSettings(
        bucket_s=0.2, season_s=0.8, lead_s=0.2, requests_per_replica_s=100.0
    )  # fmt: skip
    # A clock of its own: on a busy machine a 0.2 s sleep overran a bucket, which closed
    # empty and halved the forecast peak (CI, once).
    clock = iter(1000.1 + 0.2 * tick for tick in range(100))
    collector = _Collector(wall_clock=lambda: next(clock))
    assert collector.merge_telemetry("r1", _answered(10), {}).floor is None  # not configured
    collector.configure_forecast(settings, min_replicas=2, max_replicas=8)
    floors = []
    for _ in range(8):  # 500 requests per 0.2 s bucket: 2,500/s, 30 replicas' worth
        floors.append(collector.merge_telemetry("r1", _answered(500), {}).floor)
    assert floors[0] == 2  # nothing closed yet: the last value of nothing is 0
    assert floors[-1] == 8  # the forecast peak needs more than the ceiling
    snapshot = collector.snapshot()
    assert set(snapshot.forecasts) == {"ingress"}
    peak, floor, method = snapshot.forecasts["ingress"]
    # Seven buckets closed, each at the steady rate: any method forecasts it.
    assert floor == 8
    assert method in {"last-value", "seasonal-naive", "holt-winters"}
    assert peak == pytest.approx(2500.0, rel=0.05)

    context = SimpleNamespace(
        current_num_replicas=2, target_num_replicas=2, total_num_requests=0.0,
        current_time=1.0, policy_state=None,
        aggregated_metrics={FORECAST_FLOOR_METRIC: {"r1": 8.0, "r2": 8.0}},
    )  # fmt: skip

    ingress = ServingSettings().ingress_autoscaling
    assert ingress is not None
    policy = QueueDepthPolicy(**ingress.fitted(6).model_dump())
    assert policy(context)[0] == 6  # raised to the forecast, within the ceiling


def test_a_family_deployment_forecasts_from_its_own_requests_only() -> None:
    """A family with its own deployment (a GPU one) learns its own day: the collector
    keeps its rate history apart from the ingress's, from the ingress's telemetry."""
    settings = ForecastSettings(
        bucket_s=0.2, season_s=0.8, lead_s=0.2, requests_per_replica_s=100.0
    )  # fmt: skip
    clock = iter(1000.1 + 0.2 * tick for tick in range(100))
    collector = _Collector(wall_clock=lambda: next(clock))
    collector.configure_forecast(settings, 1, 6, family="npc-behavior")
    assert collector.floor("npc-behavior") == 1  # nothing seen yet: its minimum
    for _ in range(8):  # 100 NPC requests per bucket (500/s), 400 of another family
        mixed = _answered(100)
        mixed.merge(_answered(400, family="difficulty-tuning"))
        assert collector.merge_telemetry("r1", mixed, {}).floor is None  # the ingress's: none
    assert collector.floor("npc-behavior") == 6  # 500/s x 1.2 / 100 per replica
    assert collector.floor("difficulty-tuning") is None  # it asked for no forecast
    forecasts = collector.snapshot().forecasts  # the family's, exported under its name
    assert set(forecasts) == {"npc-behavior"}
    assert forecasts["npc-behavior"][1] == 6
    # Its replicas restart and send the same terms: the history is kept.
    collector.configure_forecast(settings, 1, 6, family="npc-behavior")
    assert collector.floor("npc-behavior") == 6


def _answered(count: int, family: str = "npc-behavior") -> Telemetry:
    telemetry = Telemetry()
    for _ in range(count):
        telemetry.record(family, "1", "champion", "ok", 0.001, 1)
    return telemetry
