"""``GET /metrics``: the platform's own measurements in Prometheus' text format.

Every series is named ``gameserve_*`` and labelled by family (and version and
role where one answered). Under Ray the figures are the collector's totals over
every replica (``serving/app/collector.py``), so any ingress replica a scrape
reaches answers for the whole application; the route takes a ``read`` key like
every other non-health route (Prometheus sends it with its ``authorization``
setting).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from fastapi import APIRouter, Response
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from serving.dataplane.game_time import PRIORITIES, REASONS, FamilyCounts
from serving.dataplane.plane import DataPlane
from serving.dataplane.telemetry import Histogram, MetricsSnapshot

Snapshot = Callable[[], Awaitable[MetricsSnapshot]]
SERIES = ("family", "version", "role")


def local_snapshot(plane: DataPlane) -> Snapshot:
    """This process's own figures: the app without Ray (tests, tools)."""

    async def snapshot() -> MetricsSnapshot:
        telemetry = plane.telemetry
        return MetricsSnapshot(
            telemetry=telemetry,
            game_time=plane.counters.families,
            in_flight=telemetry.busy(),
            ingress_replicas=1,
            payloads={},  # a payload log runs only in replicas, which report through the collector
        )

    return snapshot


def metrics_router(plane: DataPlane, snapshot: Snapshot) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    async def metrics() -> Response:
        """Requests, latency, rows, fallbacks, shedding, queue, replicas and rollouts."""
        replicas = {name: (await plane.status(name)).replicas for name in sorted(plane.backends)}
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Rendered(await snapshot(), replicas))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


class _Rendered(Collector):
    def __init__(self, snapshot: MetricsSnapshot, replicas: dict[str, int]) -> None:
        self.snapshot = snapshot
        self.replicas = replicas

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._game_time()
        yield from self._capacity()
        yield from self._rollouts()
        yield self._payloads()

    def _requests(self) -> Iterator[Metric]:
        telemetry = self.snapshot.telemetry
        requests = CounterMetricFamily(
            "gameserve_requests",
            "Model requests by who answered and outcome (code 'ok', or the error's code).",
            labels=[*SERIES, "code"],
        )
        for labels, count in sorted(telemetry.requests.items()):
            requests.add_metric(list(labels), count)
        yield requests
        yield _histograms(
            "gameserve_request_duration_seconds",
            "From receipt at the ingress to the answer.",
            telemetry.latency_s,
        )
        yield _histograms("gameserve_request_rows", "Rows (NPCs, players...) per request.",
                          telemetry.rows)  # fmt: skip

    def _game_time(self) -> Iterator[Metric]:
        # Every served family, counted or not: a series exists before its first event.
        counted = self.snapshot.game_time
        families = [(f, counted.get(f, FamilyCounts())) for f in sorted({*self.replicas, *counted})]
        fallbacks = CounterMetricFamily(
            "gameserve_fallbacks", "Answers by the family's fallback, by reason.",
            labels=["family", "reason"],
        )  # fmt: skip
        missed = CounterMetricFamily(
            "gameserve_errors_on_miss", "Errors where no fallback answered, by reason.",
            labels=["family", "reason"],
        )  # fmt: skip
        shed = CounterMetricFamily(
            "gameserve_shed", "Requests refused at admission, by priority class.",
            labels=["family", "priority"],
        )  # fmt: skip
        expired = CounterMetricFamily(
            "gameserve_expired", "Requests dropped unrun: their deadline had passed.",
            labels=["family"],
        )  # fmt: skip
        late = CounterMetricFamily(
            "gameserve_late", "Model answers that came after their deadline.", labels=["family"]
        )
        spent = CounterMetricFamily(
            "gameserve_spent_on_arrival",
            "Requests refused at once (use_local): their deadline was spent in the queues.",
            labels=["family"],
        )
        lowered = CounterMetricFamily(
            "gameserve_priority_lowered",
            "X-Priority above the caller key's ceiling, lowered to it.",
            labels=["family"],
        )
        for family, counts in families:
            for reason in REASONS:
                fallbacks.add_metric([family, reason], counts.fallbacks[reason])
                missed.add_metric([family, reason], counts.missed[reason])
            for priority in PRIORITIES:
                shed.add_metric([family, priority], counts.shed[priority])
            expired.add_metric([family], counts.expired)
            late.add_metric([family], counts.late)
            spent.add_metric([family], counts.spent_on_arrival)
            lowered.add_metric([family], counts.priority_lowered)
        yield from (fallbacks, missed, shed, expired, late, spent, lowered)

    def _capacity(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily(
            "gameserve_queue_depth",
            "Requests in the system now (admitted, not yet answered), by family.",
            labels=["family"],
        )
        replicas = GaugeMetricFamily(
            "gameserve_replicas", "Replicas running, by family and for the ingress.",
            labels=["deployment"],
        )  # fmt: skip
        for family in sorted(self.replicas):
            queue.add_metric([family], self.snapshot.in_flight.get(family, 0))
            replicas.add_metric([family], self.replicas[family])
        replicas.add_metric(["ingress"], self.snapshot.ingress_replicas)
        yield queue
        yield replicas
        yield from self._exhausted()
        if self.snapshot.forecasts:
            rate = GaugeMetricFamily(
                "gameserve_forecast_requests_per_second",
                "The demand forecast: the peak request rate of the next lead time.",
                labels=["deployment", "method"],
            )
            floors = GaugeMetricFamily(
                "gameserve_forecast_replicas",
                "The replica floor the forecast asks for.", labels=["deployment", "method"],
            )  # fmt: skip
            for deployment, (peak, floor, method) in sorted(self.snapshot.forecasts.items()):
                rate.add_metric([deployment, method], peak)
                floors.add_metric([deployment, method], floor)
            yield rate
            yield floors

    def _exhausted(self) -> Iterator[Metric]:
        full = GaugeMetricFamily(
            "gameserve_capacity_exhausted",
            "1 where the cluster holds no more of a deployment's replicas than run: its "
            "policy holds there, the edge sheds and fallbacks answer the rest.",
            labels=["deployment"],
        )
        short = GaugeMetricFamily(
            "gameserve_capacity_short_replicas",
            "Replicas the load asked for that the full cluster could not place.",
            labels=["deployment"],
        )
        for deployment in sorted(set(self.replicas) | set(self.snapshot.exhausted)):
            held, wanted = self.snapshot.exhausted.get(deployment, (0, 0))
            full.add_metric([deployment], 1.0 if deployment in self.snapshot.exhausted else 0.0)
            short.add_metric([deployment], max(wanted - held, 0))
        yield full
        yield short

    def _rollouts(self) -> Iterator[Metric]:
        labels = ["family", "challenger"]
        step = GaugeMetricFamily(
            "gameserve_rollout_step", "The rollout's current step (0-based).", labels=labels
        )
        weight = GaugeMetricFamily(
            "gameserve_rollout_weight", "Share of traffic the challenger answers.", labels=labels
        )
        shadow = GaugeMetricFamily(
            "gameserve_rollout_shadow", "Share of traffic mirrored to the challenger.",
            labels=labels,
        )  # fmt: skip
        gate = GaugeMetricFamily(
            "gameserve_rollout_gate",
            "The window figures the rollout controller last judged, by role.",
            labels=[*labels, "role", "gate"],
        )
        for family, rollout in sorted(self.snapshot.rollouts.items()):
            at = [family, rollout.challenger]
            step.add_metric(at, rollout.step)
            weight.add_metric(at, rollout.weight)
            shadow.add_metric(at, rollout.shadow)
            for role, figures in sorted(rollout.judged.items()):
                for name, value in sorted(figures.items()):
                    gate.add_metric([*at, role, name], value)
        yield from (step, weight, shadow, gate)

    def _payloads(self) -> Metric:
        records = CounterMetricFamily(
            "gameserve_payload_records",
            "Payload log records by outcome: offered (sampled), written to complete files, "
            "dropped at a full queue, failed to write.",
            labels=["family", "outcome"],
        )
        for (family, outcome), count in sorted(self.snapshot.payloads.items()):
            records.add_metric([family, outcome], count)
        return records


def _histograms(
    name: str, documentation: str, series: dict[tuple[str, str, str], Histogram]
) -> HistogramMetricFamily:
    metric = HistogramMetricFamily(name, documentation, labels=list(SERIES))
    for labels, histogram in sorted(series.items()):
        metric.add_metric(
            list(labels), [(le, float(n)) for le, n in histogram.cumulative()], histogram.total
        )
    return metric
