"""The one place measurements from every replica meet: rollout windows, game-time counts,
request telemetry, and where each rollout stands."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import ray

from serving.app.config import INGRESS_NAME
from serving.app.demand_forecast import Forecast, ForecastSettings, RateHistory, forecast_floor
from serving.app.placement import Exhausted
from serving.dataplane.game_time import FamilyCounts, GameTimeCounters
from serving.dataplane.payload_log import PayloadLog
from serving.dataplane.rollout_metrics import FamilyWindow, MetricsWindows, RolloutWindow
from serving.dataplane.telemetry import MetricsSnapshot, RolloutGauges, Telemetry

logger = logging.getLogger(__name__)

COLLECTOR_NAME = "gameserve-rollout-metrics"
NAMESPACE = "gameserve"
FLUSH_INTERVAL_S = 0.25
HEAD_NODE_RESOURCE = "node:__internal_head__"
# A replica silent this long is gone (stopped, or killed): its gauges no longer count.
REPLICA_SILENT_S = 5.0
# A full cluster's report, renewed every CAPACITY_REPORT_S by the policy that found
# it, is forgotten this long after its last renewal (a deployment redeployed or gone).
CAPACITY_REPORT_TTL_S = 30.0


@dataclasses.dataclass(frozen=True)
class Heard:
    """The collector's answer to a replica's heartbeat."""

    floor: int | None  # the demand forecast's replica floor (None: no forecast)
    ingress_replicas: int  # replicas heard in the last REPLICA_SILENT_S, the caller included


class _Collector:
    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._wall_clock = wall_clock  # what the demand history buckets by
        self.windows = MetricsWindows()
        self.game_time = GameTimeCounters()
        self.telemetry = Telemetry()
        # replica id -> (last heard on the monotonic clock, its requests in flight by family)
        self.heard: dict[str, tuple[float, dict[str, int]]] = {}
        self.rollouts: dict[str, RolloutGauges] = {}
        self.judged: dict[str, RolloutWindow] = {}
        self.payloads: dict[str, dict[tuple[str, str], int]] = {}
        # The ingress's demand (key None: every request) and each family deployment's
        # that forecasts its own (key: the family, its requests only).
        self.demands: dict[str | None, Demand] = {}
        # deployment -> (when last reported on the monotonic clock, its full cluster)
        self.exhausted: dict[str, tuple[float, Exhausted]] = {}

    @property
    def demand(self) -> Demand | None:
        """The ingress's demand, if it forecasts."""
        return self.demands.get(None)

    def configure_forecast(
        self,
        settings: ForecastSettings,
        min_replicas: int,
        max_replicas: int,
        family: str | None = None,
    ) -> None:
        """Forecast terms of the ingress (``family`` None) or of a family's deployment;
        each replica sends them as it starts. The history so far is kept."""
        known = self.demands.get(family)
        if known is None or known.terms != (settings, min_replicas, max_replicas):
            history = known.history if known is not None else None
            self.demands[family] = Demand(settings, min_replicas, max_replicas, history)

    def floor(self, family: str) -> int | None:
        """The replica floor a family deployment's forecast asks for (None: no forecast)."""
        demand = self.demands.get(family)
        forecast = demand.forecast() if demand is not None else None
        return forecast.floor if forecast is not None else None

    def merge(self, windows: dict[str, FamilyWindow]) -> None:
        self.windows.merge(windows)

    def merge_game_time(self, counts: dict[str, FamilyCounts]) -> None:
        self.game_time.merge(counts)

    def game_time_totals(self) -> dict[str, FamilyCounts]:
        """Every replica's counts since the collector started, by family."""
        return self.game_time.families

    def merge_telemetry(
        self,
        replica: str,
        drained: Telemetry,
        in_flight: dict[str, int],
        payloads: dict[tuple[str, str], int] | None = None,
    ) -> Heard:
        """Takes a replica's drained telemetry; answers the forecast's replica floor and
        how many ingress replicas are live (each one's share of a key's rate)."""
        self.telemetry.merge(drained)
        now = time.monotonic()
        self.heard[replica] = (now, in_flight)
        if payloads:  # a replica's running totals: the last word of a dead one stays counted
            self.payloads[replica] = payloads
        # A silent replica is gone (its id never comes back: a restart gets a new
        # one), so it is forgotten here, which keeps this map to the live replicas.
        for gone in [r for r, (at, _) in self.heard.items() if now - at >= REPLICA_SILENT_S]:
            del self.heard[gone]
        live = len(self.heard)
        if self.demands:
            by_family: Counter[str] = Counter()
            for (family, *_), count in drained.requests.items():
                by_family[family] += count
            wall = self._wall_clock()
            for scope, demand in self.demands.items():
                counted = by_family.total() if scope is None else by_family[scope]
                demand.history.add(counted, wall)
        forecast = self.demand.forecast() if self.demand is not None else None
        return Heard(forecast.floor if forecast is not None else None, live)

    def set_rollout(self, family: str, gauges: RolloutGauges | None) -> None:
        if gauges is None:
            self.rollouts.pop(family, None)
            self.judged.pop(family, None)
        else:
            self.rollouts[family] = gauges

    def set_capacity(self, deployment: str, report: Exhausted | None) -> None:
        """A policy found its cluster full (``report``), or no longer (None)."""
        if report is None:
            self.exhausted.pop(deployment, None)
        else:
            self.exhausted[deployment] = (time.monotonic(), report)

    def capacity(self) -> dict[str, Exhausted]:
        """The deployments whose cluster is full now, by their policies' latest reports."""
        now = time.monotonic()
        return {
            name: report
            for name, (at, report) in self.exhausted.items()
            if now - at < CAPACITY_REPORT_TTL_S
        }

    def snapshot(self) -> MetricsSnapshot:
        """Totals since the collector started, and the gauges of the replicas still heard."""
        now = time.monotonic()
        live = {r: load for r, (at, load) in self.heard.items() if now - at < REPLICA_SILENT_S}
        in_flight: Counter[str] = Counter()
        for load in live.values():
            in_flight.update(load)
        rollouts = {
            family: dataclasses.replace(gauges, judged=_judged(self.judged.get(family)))
            for family, gauges in self.rollouts.items()
        }
        payloads: Counter[tuple[str, str]] = Counter()
        for totals in self.payloads.values():
            payloads.update(totals)
        forecasts = {}
        for scope, demand in self.demands.items():
            forecast = demand.forecast()
            if forecast is not None:
                name = INGRESS_NAME if scope is None else scope
                forecasts[name] = (forecast.peak_rate, forecast.floor, forecast.method)
        return MetricsSnapshot(
            forecasts=forecasts,
            payloads=dict(payloads),
            telemetry=self.telemetry,
            game_time=self.game_time.families,
            in_flight=dict(in_flight),
            ingress_replicas=len(live),
            rollouts=rollouts,
            exhausted={
                name: (report.held, report.wanted) for name, report in self.capacity().items()
            },
        )

    def read(self, family: str, reset: bool) -> RolloutWindow:
        summary = self.windows.family(family).summary()
        if reset:
            self.windows.families.pop(family, None)
        else:  # what the controller judges (a reset starts a step: nothing judged yet)
            self.judged[family] = summary
        return summary


class Demand:
    """The request rate's history and the forecast made from it, remade as each bucket
    closes (a Holt-Winters fit takes a fraction of a second, off every request path)."""

    def __init__(
        self,
        settings: ForecastSettings,
        min_replicas: int,
        max_replicas: int,
        history: RateHistory | None = None,
    ) -> None:
        self.terms = (settings, min_replicas, max_replicas)
        keep = 3 * settings.season + settings.horizon
        if history is None or history.bucket_s != settings.bucket_s:
            history = RateHistory(settings.bucket_s, keep)
        self.history = history
        self._made_at = -1
        self._forecast: Forecast | None = None

    def forecast(self) -> Forecast | None:
        if self.history.closed != self._made_at:
            self._made_at = self.history.closed
            try:
                self._forecast = forecast_floor(self.history.rates(), *self.terms)
            except Exception:  # a failed fit leaves the last forecast, and reactive scaling
                logger.exception("demand forecast failed; keeping the last one")
        return self._forecast


def _judged(window: RolloutWindow | None) -> dict[str, dict[str, float]]:
    if window is None:
        return {}
    return {"champion": window.champion.figures(), "challenger": window.challenger.figures()}


def collector() -> Any:
    """The cluster's collector actor, created by whoever asks first."""
    # Pinned to the head node: a detached actor on an elastic GPU worker would
    # keep that node busy, and the autoscaler would never give it back.
    actor_class = cast(
        Any, ray.remote(num_cpus=0, resources={HEAD_NODE_RESOURCE: 0.001})(_Collector)
    )
    return actor_class.options(
        name=COLLECTOR_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()


async def flush_forever(
    windows: MetricsWindows | None = None,
    game_time: GameTimeCounters | None = None,
    telemetry: tuple[str, Telemetry] | None = None,
    payloads: PayloadLog | None = None,
    on_heard: Callable[[Heard | None], None] | None = None,
) -> None:
    """Ship what a replica measured to the collector, a few times a second.

    ``telemetry`` is (this replica's id, its telemetry); it is sent every time,
    as the heartbeat that keeps the replica's gauges counted. ``on_heard`` gets
    each answer (the forecast's replica floor, the live ingress replicas), or
    None when the heartbeat failed.

    The loop outlives any one failed pass, the collector's lookup included: it
    runs as a task nobody awaits, so an exception would end it silently, and
    the replica's rollout windows and heartbeat with it (a rollout then waits
    for challenger traffic that is never reported).
    """
    target: Any = None
    failing = False
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_S)
        try:
            if target is None:
                target = collector()
            await _flush_once(target, windows, game_time, telemetry, payloads, on_heard)
        except Exception:
            if not failing:  # once per run of failures: a broken collector fails them all
                logger.exception("could not ship this replica's measurements; retrying")
            failing, target = True, None  # looked up again: it may have been restarted
        else:
            failing = False


async def _flush_once(
    target: Any,
    windows: MetricsWindows | None,
    game_time: GameTimeCounters | None,
    telemetry: tuple[str, Telemetry] | None,
    payloads: PayloadLog | None,
    on_heard: Callable[[Heard | None], None] | None,
) -> None:
    heard: Heard | None = None
    if telemetry is not None:
        recorded = payloads.counts() if payloads is not None else {}
        heard = await _flush_telemetry(target, *telemetry, recorded)
    # Each drain is right before its send, whose failure is handled there: nothing
    # drained is in hand when anything else in this pass fails.
    drained = windows.drain() if windows is not None else {}
    try:
        if drained:
            await target.merge.remote(drained)
    except Exception as exc:  # a window's samples may be lost; requests never are
        logger.warning("could not flush rollout metrics: %s", exc)
    counts = game_time.drain() if game_time is not None else {}
    try:
        if counts:
            await target.merge_game_time.remote(counts)
    except Exception as exc:  # counts are kept for the next flush: totals stay whole
        logger.warning("could not flush game-time counts: %s", exc)
        if game_time is not None:
            game_time.merge(counts)
    if telemetry is not None and on_heard is not None:
        on_heard(heard)


async def _flush_telemetry(
    target: Any, replica: str, telemetry: Telemetry, payloads: dict[tuple[str, str], int]
) -> Heard | None:
    drained = telemetry.drain()
    try:
        heard: Heard = await target.merge_telemetry.remote(
            replica, drained, telemetry.busy(), payloads
        )
    except Exception as exc:  # kept for the next flush, like the game-time counts
        logger.warning("could not flush request telemetry: %s", exc)
        telemetry.merge(drained)
        return None
    return heard


async def follow_floor(family: str, on_floor: Callable[[int | None], None]) -> None:
    """Hand ``on_floor`` the forecast floor of ``family``'s deployment, once a second.

    A family replica sends no request telemetry (the ingress does, for it), so it
    asks for its floor instead of hearing it in a heartbeat's answer. Like
    ``flush_forever``, it outlives a failed pass; a failure means no floor.
    """
    target: Any = None
    failing = False
    while True:
        await asyncio.sleep(4 * FLUSH_INTERVAL_S)
        try:
            if target is None:
                target = collector()
            on_floor(await target.floor.remote(family))
        except Exception as exc:
            if not failing:  # once per run of failures
                logger.warning("could not read %s's forecast floor: %s", family, exc)
            failing, target = True, None
            on_floor(None)
        else:
            failing = False


async def metrics_snapshot() -> MetricsSnapshot:
    snapshot: MetricsSnapshot = await collector().snapshot.remote()
    return snapshot


async def game_time_totals() -> dict[str, FamilyCounts]:
    totals: dict[str, FamilyCounts] = await collector().game_time_totals.remote()
    return totals
