"""Queue-depth autoscaling: replicas follow the work waiting, within a latency budget.

``decide`` is a pure function of what Ray Serve reports each tick, so it is
tested on synthetic contexts; ``QueueDepthPolicy`` adapts it to Ray Serve's
custom autoscaling policy API (named by import path in the deployment config).
A replica may hold ``latency_budget_ms / service_time_ms`` requests and still
answer inside the budget; that is the per-replica target.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

from pydantic import BaseModel, Field

from serving.app.demand_forecast import ForecastSettings
from serving.app.placement import Exhausted, exhausted, held_ceiling, watch_placement

logger = logging.getLogger(__name__)

POLICY_PATH = "serving.app.autoscaling:QueueDepthPolicy"
# The custom metric an ingress replica reports (record_autoscaling_stats): requests
# in it on average, counted where Serve's ongoing count cannot see them.
IN_SYSTEM_METRIC = "gameserve_in_system"
# The replica floor the collector's demand forecast asks for (serving/app/demand_forecast.py).
FORECAST_FLOOR_METRIC = "gameserve_forecast_floor"
# Ray pushes queue metrics every 10 s by default: far too slow to follow a spike.
METRIC_PUSH_INTERVAL_S = 0.5
RUNTIME_ENV_VARS = {
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": str(METRIC_PUSH_INTERVAL_S),
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": str(METRIC_PUSH_INTERVAL_S),
}
# How often a policy renews its report of a full cluster (the collector's
# CAPACITY_REPORT_TTL_S forgets one not renewed).
CAPACITY_REPORT_S = 10.0
# Prefixed so they never collide with the keys Serve keeps in the same state.
_LAST_UP, _LAST_DOWN, _CALM_SINCE = "gameserve_last_up", "gameserve_last_down", "gameserve_calm"


class CalendarEvent(BaseModel):
    """A known spike (a tournament final): replicas are raised ahead of it."""

    name: str
    start_s: float = Field(description="Unix time the event starts")
    end_s: float = Field(description="Unix time it ends")
    min_replicas: int = Field(ge=0, description="Replicas to hold during the event")
    lead_s: float = Field(default=300.0, ge=0, description="How long before start to scale")

    def active(self, now: float) -> bool:
        return self.start_s - self.lead_s <= now <= self.end_s


class Capacity(BaseModel):
    """What the cluster holds at most: the ceiling of a policy left to "fit the machine"."""

    cpus: float = Field(gt=0)
    gpus: float = Field(default=0.0, ge=0)

    @classmethod
    def this_machine(cls) -> Capacity:
        return cls(cpus=float(os.cpu_count() or 1))

    def replicas(self, num_cpus: float, num_gpus: float = 0.0) -> int:
        """How many replicas of this size fit. A replica is a process that keeps a
        core busy under load, so CPU replicas are counted a core each whatever
        fraction they reserve; GPU replicas by their GPU share."""
        fits = math.floor(self.cpus / max(num_cpus, 1.0))
        if num_gpus > 0:
            fits = min(fits, math.floor(self.gpus / num_gpus + 1e-9))
        return max(fits, 1)


class QueueDepthSettings(BaseModel):
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int | None = Field(
        default=None,
        ge=1,
        description="None: as many as the cluster's capacity holds (Capacity.replicas), "
        "resolved when the application is planned.",
    )
    latency_budget_ms: float = Field(default=20.0, gt=0, description="One server tick at 50 Hz")
    service_time_ms: float = Field(default=2.0, gt=0, description="Replica time per request")
    scale_up_cooldown_s: float = Field(default=0.0, ge=0)
    scale_down_cooldown_s: float = Field(
        default=30.0, ge=0, description="Load must stay low this long before replicas go"
    )
    scale_down_hysteresis: float = Field(
        default=0.3, ge=0, lt=1, description="Scale down only below (1 - h) of the target"
    )
    max_scale_up_step: int | None = Field(default=None, ge=1, description="None: jump at once")
    max_scale_down_step: int = Field(default=1, ge=1)
    placement_patience_s: float = Field(
        default=120.0, gt=0,
        description="How long replicas asked for may wait for a node, none added, before "
        "the cluster counts as full and the policy holds at what runs (serving/app/"
        "placement.py); longer than a node's start plus a replica's.",
    )  # fmt: skip
    full_recheck_s: float = Field(
        default=300.0, gt=0, description="How long a full cluster is believed before the "
        "policy asks for the replicas it wants again.",
    )  # fmt: skip
    calendar: list[CalendarEvent] = Field(default_factory=list)
    forecast: ForecastSettings | None = Field(
        default=None,
        description="Raise the floor ahead of the load a forecast of the request rate "
        "expects (the ingress: on by default). None: reactive only.",
    )

    @property
    def target_per_replica(self) -> float:
        return max(self.latency_budget_ms / self.service_time_ms, 1.0)

    @property
    def ceiling(self) -> int:
        if self.max_replicas is None:
            raise ValueError("max_replicas: unresolved; fit the settings to a Capacity first")
        return self.max_replicas

    def fitted(self, fits: int) -> QueueDepthSettings:
        """These settings with an unset ceiling set to ``fits`` replicas (never under min)."""
        if self.max_replicas is not None:
            return self
        return self.model_copy(update={"max_replicas": max(fits, self.min_replicas, 1)})

    def floor(self, now: float, forecast: int = 0) -> int:
        events = [e.min_replicas for e in self.calendar if e.active(now)]
        return min(max([self.min_replicas, forecast, *events]), self.ceiling)


def aggressive(**overrides: Any) -> QueueDepthSettings:
    """Scale up at once, down after 30 s of calm: NPCs must never miss a tick."""
    return QueueDepthSettings(**overrides)


def conservative(**overrides: Any) -> QueueDepthSettings:
    """Scale up in steps of two, down only after two calm minutes, one at a time."""
    defaults: dict[str, Any] = {
        "max_scale_up_step": 2,
        "scale_up_cooldown_s": 5.0,
        "scale_down_cooldown_s": 120.0,
        "scale_down_hysteresis": 0.5,
    }
    return QueueDepthSettings(**{**defaults, **overrides})


def decide(
    settings: QueueDepthSettings,
    current: int,
    load: float,
    now: float,
    state: dict[str, Any],
    forecast: int = 0,
    running: int | None = None,
) -> tuple[int, dict[str, Any]]:
    """Replicas for ``load`` requests in the system (ongoing plus queued), never under
    the floor (min, calendar events, and ``forecast``: what the demand forecast asks),
    nor over what the cluster was found to place (given the ``running`` replicas)."""
    state = dict(state)
    floor = settings.floor(now, forecast)
    target = settings.target_per_replica
    wanted = min(max(math.ceil(load / target), floor), settings.ceiling)
    if running is not None:
        watch_placement(state, current, running, wanted, now, settings.placement_patience_s)
        held = held_ceiling(state, wanted, now, settings.full_recheck_s)
        if held is not None:
            if current > held:  # the asks no node took are withdrawn
                return held, state
            wanted = min(wanted, held)
    if wanted > current:
        state.pop(_CALM_SINCE, None)
        if now - state.get(_LAST_UP, -math.inf) < settings.scale_up_cooldown_s:
            return current, state
        step = wanted - current
        if settings.max_scale_up_step is not None:
            step = min(step, settings.max_scale_up_step)
        state[_LAST_UP] = now
        return current + step, state
    # Going down needs load well under the target (hysteresis), held for a while.
    enough = max(math.ceil(load / (target * (1 - settings.scale_down_hysteresis))), floor)
    if current < floor:
        return floor, state
    if enough >= current:
        state.pop(_CALM_SINCE, None)
        return current, state
    calm_since = state.setdefault(_CALM_SINCE, now)
    if now - calm_since < settings.scale_down_cooldown_s:
        return current, state
    state[_LAST_DOWN] = now
    state[_CALM_SINCE] = now  # each further step waits its own cooldown
    return max(enough, current - settings.max_scale_down_step), state


class QueueDepthPolicy:
    """Ray Serve's class-callable policy: built once per deployment with its kwargs."""

    def __init__(self, **kwargs: Any) -> None:
        self.settings = QueueDepthSettings.model_validate(kwargs)
        self._reported_at = -math.inf

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        now = ctx.current_time or time.time()
        # Serve's current_num_replicas counts RUNNING replicas only. Deciding from
        # it, a dip in load while new replicas still start returned the running
        # count, and Serve stopped the starting ones: a slow-starting ingress
        # flapped 2 -> 4 -> 2 and never scaled (benchmarks/spike.py, this round).
        # The target is what the policy decided last; it moves from there.
        target = getattr(ctx, "target_num_replicas", None)
        before = dict(ctx.policy_state or {})
        replicas, state = decide(
            self.settings,
            int(target if target is not None else ctx.current_num_replicas),
            load(ctx),
            float(now),
            before,
            forecast_floor(ctx) if self.settings.forecast is not None else 0,
            running=int(ctx.current_num_replicas),
        )
        name = str(getattr(ctx, "deployment_name", "deployment"))
        report = exhausted(name, state)
        # On a change, and again every CAPACITY_REPORT_S while full (the collector
        # forgets a report not renewed: a redeployed policy starts with no state).
        due = report is not None and now - self._reported_at >= CAPACITY_REPORT_S
        if due or report != exhausted(name, before):
            _report_capacity(name, report)
            self._reported_at = now
        return replicas, state


def _report_capacity(deployment: str, report: Exhausted | None) -> None:
    """Tell the collector (fire and forget: the policy runs in Serve's controller, which
    must not wait on it); a failure costs the report, never the decision."""
    # Imported here: the settings import this module, and must not import Ray.
    from serving.app.collector import collector

    try:
        collector().set_capacity.remote(deployment, report)
    except Exception:  # the collector restarting; the next change reports again
        logger.warning("could not report %s's capacity to the collector", deployment)


def _reported(ctx: Any, metric: str) -> list[float]:
    """A custom metric the replicas report (record_autoscaling_stats), one per replica."""
    by_replica = (getattr(ctx, "aggregated_metrics", None) or {}).get(metric) or {}
    return [float(value) for value in by_replica.values()]


def forecast_floor(ctx: Any) -> int:
    """The floor the replicas relay from the collector's forecast (the same on each)."""
    return math.ceil(max(_reported(ctx, FORECAST_FLOOR_METRIC), default=0.0))


def load(ctx: Any) -> float:
    """Requests in the system: Serve's count (handles' queues and replicas' ongoing), or
    what the replicas count themselves where that is more (an ingress: see
    ``serving.dataplane.admission.Occupancy``), summed over replicas."""
    return max(float(ctx.total_num_requests), sum(_reported(ctx, IN_SYSTEM_METRIC)))


def autoscaling_config(settings: QueueDepthSettings, initial: int | None = None) -> dict[str, Any]:
    """The deployment's ``autoscaling_config``: our policy decides, Serve only bounds."""
    return {
        "min_replicas": settings.min_replicas,
        "max_replicas": settings.ceiling,
        "initial_replicas": initial if initial is not None else max(settings.min_replicas, 1),
        # The policy keeps its own cooldowns; Serve's delays would stack on them.
        "upscale_delay_s": 0.0,
        "downscale_delay_s": 0.0,
        # Averaged over this window; it must exceed the metric push interval.
        "look_back_period_s": 3.0,
        "metrics_interval_s": METRIC_PUSH_INTERVAL_S,
        "policy": {
            "policy_function": POLICY_PATH,
            "policy_kwargs": settings.model_dump(mode="json"),
        },
    }
