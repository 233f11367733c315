"""The HTTP ingress deployment: the FastAPI app over the families' backends.

A family runs either here, in this replica's process (``serving/dataplane/colocated.py``),
or in its own deployment reached through a Ray handle (``serving/app/ray_backend.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, cast

from ray import serve
from ray.serve import Deployment
from ray.serve.handle import DeploymentHandle

from models import FAMILIES, get_family
from models.catalog import catalog_of, install_catalog
from serving.app.autoscaling import FORECAST_FLOOR_METRIC, IN_SYSTEM_METRIC
from serving.app.collector import (
    Heard,
    collector,
    flush_forever,
    game_time_totals,
    metrics_snapshot,
)
from serving.app.config import CHALLENGER_SUFFIX, INGRESS_NAME, IngressConfig
from serving.app.ray_backend import RayBackend, ReplicaWatch
from serving.app.replica_logging import route_to_serve_log
from serving.dataplane.admission import Admission, AdmissionBounds
from serving.dataplane.backend import Backend
from serving.dataplane.colocated import ColocatedBackend
from serving.dataplane.game_time import GameTimeCounters
from serving.dataplane.model_slot import ModelSlot
from serving.dataplane.model_source import ModelSource
from serving.dataplane.payload_files import salt_from
from serving.dataplane.payload_log import PayloadLog, PayloadLogConfig
from serving.dataplane.plane import DataPlane
from serving.http.app import create_app
from serving.http.listener import HttpListener
from serving.protocol.access import Access
from serving.rpc.server import GrpcServer
from serving.rpc.service import InferenceService
from serving.settings import ServingSettings
from serving.upstream import late_app_ingress

# Calls an in-process challenger may have in flight: a sound model finishes each
# in well under a millisecond, so more only ever means a slow one's backlog.
CHALLENGER_IN_FLIGHT = 4


class IngressReplica:
    """Builds the app after construction, from the handles Serve passes in."""

    def __init__(
        self,
        settings: dict[str, Any],
        models: dict[str, DeploymentHandle[Any]],
        challengers: dict[str, DeploymentHandle[Any]],
        source: ModelSource,
    ) -> None:
        route_to_serve_log()
        serving = ServingSettings.model_validate(settings)
        install_catalog(catalog_of(serving.family_specs))
        self.colocated: dict[str, tuple[ColocatedBackend, ColocatedBackend]] = {}
        self.watch = ReplicaWatch(serving.app_name)
        self.counters = GameTimeCounters()

        def backends(handles: dict[str, DeploymentHandle[Any]]) -> dict[str, Backend]:
            return {
                name: RayBackend(name, handle, self.watch, serving.retry_after_s)
                for name, handle in handles.items()
            }

        champion_backends, challenger_backends = backends(models), backends(challengers)
        for name in FAMILIES:
            family = serving.family(name)
            if not family.colocated:
                continue
            champion, challenger = _colocated(
                name, family.intra_op_threads, source, self.watch, self.counters
            )
            self.colocated[name] = (champion, challenger)
            champion_backends[name], challenger_backends[name] = champion, challenger
        self.payloads = _payload_log(serving)
        self.admission = Admission(admission_bounds(serving))
        self.plane = DataPlane(
            champion_backends,
            serving.max_rows_per_request,
            challenger_backends,
            timing=serving.timing,
            admission=self.admission,
            counters=self.counters,
            shipped_counts=game_time_totals,
            listeners=[] if self.payloads is None else [self.payloads.listen],
        )
        self.telemetry = self.plane.telemetry
        self._flusher: asyncio.Task[None] | None = None
        self.access = Access.from_settings(serving)  # one key check and rate for both protocols
        self.grpc: GrpcServer | None = None
        self.http: HttpListener | None = None
        self.settings = serving
        self.forecast_floor: int | None = None

    async def reconfigure(self, config: dict[str, Any]) -> None:
        parsed = IngressConfig.model_validate(config)
        loads: list[Coroutine[Any, Any, None]] = []
        unloads: list[Coroutine[Any, Any, None]] = []
        for name, (champion, challenger) in self.colocated.items():
            if parsed.champions.get(name) is not None:
                loads.append(champion.slot.load(parsed.champions[name]))
            wanted = parsed.challengers.get(name)
            (loads if wanted else unloads).append(challenger.slot.load(wanted))
        # Loads before the routes that use them; unloads after the routes that
        # used them are gone, so no request meets an empty challenger.
        await asyncio.gather(*loads)
        for name, (champion, _) in self.colocated.items():
            champion.inline = name not in parsed.routes  # see serving/dataplane/colocated.py
        self.plane.canary.set_routes(parsed.routes)
        await asyncio.gather(*unloads)
        if self._flusher is None:
            await self._start_grpc()
            await self._start_http()
            replica = serve.get_replica_context().replica_tag
            policy = self.settings.ingress_policy()
            if policy is not None and policy.forecast is not None:
                await collector().configure_forecast.remote(
                    policy.forecast, policy.min_replicas, policy.ceiling
                )
            self._flusher = asyncio.create_task(
                flush_forever(
                    self.plane.canary.metrics,
                    self.counters,
                    (replica, self.telemetry),
                    self.payloads,
                    on_heard=self._heard,
                )
            )

    async def _start_grpc(self) -> None:
        """Once routes are set (the first reconfigure), on the loop the data plane runs on."""
        serving = self.settings
        if serving.grpc.port is None:
            return
        server = GrpcServer(
            InferenceService(self.plane, self.access),
            serving.host,
            serving.grpc.port,
            max_message_bytes=serving.limits.max_body_bytes,
            max_concurrent_rpcs=serving.grpc.max_concurrent_rpcs,
            threads=serving.grpc.threads,
        )
        await server.start()
        self.grpc = server

    async def _start_http(self) -> None:
        """The app on ``runtime.replica_http_port`` too (serving/http/listener.py)."""
        port = self.settings.runtime.replica_http_port
        if port is None:
            return
        listener = HttpListener(self.build_app(), self.settings.host, port)
        await listener.start()
        self.http = listener

    def _heard(self, heard: Heard | None) -> None:
        """The collector's answer to this replica's heartbeat (None: it failed)."""
        self.forecast_floor = heard.floor if heard is not None else None
        if heard is not None and heard.ingress_replicas > 0:
            # HAProxy spreads a key's calls over every live replica, so each enforces
            # its share of the key's rate, whatever the ingress has scaled to.
            self.access.limiter.share = 1 / heard.ingress_replicas

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve calls it for the ingress's queue-depth policy (serving/app/autoscaling.py)."""
        stats = {IN_SYSTEM_METRIC: self.admission.in_system()}
        if self.forecast_floor is not None:
            stats[FORECAST_FLOOR_METRIC] = float(self.forecast_floor)
        return stats

    def stats(self, deployment: str) -> dict[str, Any]:
        """Counters of a family served here, named as its deployment would be."""
        family = deployment.removesuffix(CHALLENGER_SUFFIX)
        champion, challenger = self.colocated[family]
        backend = challenger if deployment.endswith(CHALLENGER_SUFFIX) else champion
        return backend.stats()

    async def drain(self) -> None:
        """Serve's graceful shutdown (SIGTERM, a scale-down, a redeploy), after its HTTP
        requests drained: let HTTP requests and gRPC calls in flight finish, then write
        what is queued."""
        stops = []
        listener: HttpListener | None = getattr(self, "http", None)  # None: __init__ failed
        if listener is not None:
            stops.append(listener.stop(self.settings.runtime.haproxy_drain_s))
        server: GrpcServer | None = getattr(self, "grpc", None)
        if server is not None:
            stops.append(server.stop(self.settings.grpc.drain_s))
        await asyncio.gather(*stops)
        payloads: PayloadLog | None = getattr(self, "payloads", None)
        if payloads is not None:
            payloads.close()

    def build_app(self) -> Any:
        # The collector's totals only, never this replica's unsent rest: a scrape
        # must never see a counter go down (Prometheus would read it as a reset).
        return create_app(self.plane, self.settings, metrics=metrics_snapshot, access=self.access)


def _payload_log(serving: ServingSettings) -> PayloadLog | None:
    settings = serving.payload_log
    if settings.dir is None:
        return None
    return PayloadLog(
        PayloadLogConfig(
            root=settings.dir,
            replica=serve.get_replica_context().replica_tag,
            sample=serving.payload_sample,
            max_queue=settings.max_queue,
            rotate_rows=settings.rotate_rows,
            rotate_s=settings.rotate_s,
            salt=b"" if settings.salt_file is None else salt_from(settings.salt_file.read_bytes()),
        )
    )


def admission_bounds(serving: ServingSettings) -> AdmissionBounds:
    shed = serving.game_time
    return AdmissionBounds(
        max_in_flight=serving.limits.max_in_flight,
        normal_share=shed.normal_share,
        best_effort_share=shed.best_effort_share,
        normal_lag_ms=shed.normal_lag_ms,
        best_effort_lag_ms=shed.best_effort_lag_ms,
        retry_after_s=serving.retry_after_s,
    )


def _colocated(
    name: str, threads: int, source: ModelSource, watch: ReplicaWatch, counters: GameTimeCounters
) -> tuple[ColocatedBackend, ColocatedBackend]:
    """(champion, challenger) of a family served in this process."""

    def backend(inline: bool, max_in_flight: int | None) -> ColocatedBackend:
        return ColocatedBackend(
            ModelSlot(get_family(name), source, threads),
            lambda: watch.replicas(INGRESS_NAME),
            inline=inline,
            max_in_flight=max_in_flight,
            counters=counters,
        )

    # A challenger always runs off the loop, and is refused rather than queued.
    return backend(True, None), backend(False, CHALLENGER_IN_FLIGHT)


# Ray's overloads type a decorated class as the decorator factory; it is a Deployment.
# Serve's hooks (the late-built app, the shutdown drain) are wired in serving/upstream.py.
_Hooked = late_app_ingress(IngressReplica, build_app="build_app", drain="drain")
Ingress = cast(Deployment, serve.deployment(serve.ingress()(_Hooked)))
