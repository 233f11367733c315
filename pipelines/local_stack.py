"""The local stack: MLflow, champions, Ray and the serving application.

``gameserve up`` runs it in the foreground. While it is up, a state file in
the data directory says where everything is; other commands and tests poll it.
Ray (and with it Serve, HAProxy and every replica) runs as its own process
tree (``pipelines/local_ray.py``): if this process dies, serving goes on, and
the next start on the same data dir reattaches to it and carries on its
rollouts; a clean stop (Ctrl-C, ``gameserve down``) stops it all.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from types import TracebackType

import ray
from ray import serve

from models.errors import ConflictError
from pipelines.bootstrap import ChampionStatus, ensure_champions
from pipelines.key_commands import ensure_admin_key, key_file
from pipelines.leftovers import haproxy_dir, stop_leftovers, stop_mlflow_leftovers
from pipelines.local_ray import LocalRay, forget
from pipelines.registry import ModelRegistry, connect
from pipelines.registry_source import registry_source_spec
from pipelines.rollout.commands import RegistryControls
from pipelines.rollout.controller import RolloutController
from pipelines.rollout.state import RolloutStore
from pipelines.settings import Settings
from pipelines.signing import VersionSigner
from pipelines.stack_state import StackLock, StackState
from pipelines.supervisor import TrackingSupervisor
from pipelines.tracking_server import (
    EmbeddedTrackingServer,
    MlflowCredentials,
    is_healthy,
)
from serving.app.gateway import ServeGateway
from serving.app.log_follower import ReplicaErrorFollower
from serving.control.admin import create_admin_app
from serving.control.admin_server import AdminServer
from serving.protocol.keys import KeyStore
from serving.runtime.haproxy_edge import plan_for
from serving.runtime.ports import port_in_use

logger = logging.getLogger(__name__)


class LocalStack:
    """Starts what the settings ask for, in order, and stops it in reverse."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._exit = ExitStack()
        self.registry: ModelRegistry | None = None
        self.gateway: ServeGateway | None = None
        self.controller: RolloutController | None = None
        self.champions: list[ChampionStatus] = []
        self.tracking_uri = ""
        self.dashboard_url = ""
        self.new_admin_key: Path | None = None  # where the first start wrote its admin key
        self.credentials: MlflowCredentials | None = None  # the embedded MLflow's
        self.supervisor: TrackingSupervisor | None = None
        self.admin: AdminServer | None = None
        self.local_ray: LocalRay | None = None
        self.reattached = False  # to the Ray and application a dead stack left serving

    def __enter__(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def _start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # Before anything that could touch a running stack (its HAProxy, its ports).
        lock = StackLock(settings.data_dir).acquire()
        self._exit.callback(lock.release)
        serving = settings.serving
        if serving.auth.mode == "on":
            auth = serving.auth.model_copy(update={"keys_file": key_file(settings)})
            serving = serving.model_copy(update={"auth": auth})
            self.new_admin_key = ensure_admin_key(settings)
        if serving.payload_log.dir is None:
            payloads = serving.payload_log.model_copy(update={"dir": settings.payloads_dir})
            serving = serving.model_copy(update={"payload_log": payloads})
        if serving.payload_log.salt_file is None:  # the signing key: rotated together
            payloads = serving.payload_log.model_copy(
                update={"salt_file": settings.signing_key_file.resolve()}
            )
            serving = serving.model_copy(update={"payload_log": payloads})
        if settings.ray.address is None:
            self._find_local_ray()
        for field, host, port in (
            ("port", serving.host, serving.port),
            ("admin.port", serving.admin.host, serving.admin.port),
            ("grpc.port", serving.host, serving.grpc.port),
            # Another stack's replicas on it would share it (SO_REUSEPORT) and its traffic.
            ("runtime.replica_http_port", serving.host, serving.runtime.replica_http_port),
        ):
            held_by_serving = field != "admin.port" and self.reattached
            if port and port_in_use(host, port) and not held_by_serving:
                variable = field.upper().replace(".", "__")
                raise ConflictError(
                    f"serving.{field}: {host}:{port} is already in use; stop what holds it "
                    f"(`gameserve down`?) or set GAMESERVE_SERVING__{variable}"
                )
        self._start_tracking()
        signer = VersionSigner.at(settings.signing_key_file, create=True)
        self.registry = connect(
            self.tracking_uri, settings.tracking, settings.cache_dir, signer, self.credentials
        )
        self.champions = ensure_champions(self.registry, settings.train)
        self._start_ray()
        self.gateway = ServeGateway(
            serving,
            registry_source_spec(
                self.tracking_uri,
                settings.tracking,
                settings.cache_dir,
                settings.signing_key_file,
                settings.mlflow_credentials_file if self.credentials else None,
            ),
            self.dashboard_url,
        )
        if self.reattached and self.gateway.adopt():
            # Its challengers and splits are kept: a rollout resumes with its window.
            logger.warning("serving outlived the last stack; reattached to it")
        self.gateway.deploy({c.resolved.family: c.resolved.version for c in self.champions})
        self.controller = RolloutController(
            self.registry,
            self.gateway,
            settings.rollout,
            RolloutStore(settings.data_dir / "rollouts"),
            serving.payload_log.dir,
        )
        self.controller.start()
        self._exit.callback(self.controller.stop)
        keys = KeyStore(key_file(settings)) if serving.auth.mode == "on" else None
        admin_app = create_admin_app(RegistryControls(self.registry, self.controller), keys)
        self.admin = AdminServer(admin_app, serving.admin.host, serving.admin.port).start()
        self._exit.callback(self.admin.stop)
        state = StackState(
            pid=os.getpid(),
            api_url=self.gateway.url,
            dashboard_url=self.dashboard_url,
            tracking_uri=self.tracking_uri,
            champions={c.resolved.family: c.resolved.version for c in self.champions},
            admin_url=self.admin.url,
            grpc_address=self.gateway.grpc_address or "",
        )
        path = StackState.path(settings)
        path.write_text(json.dumps(asdict(state), indent=2))
        self._exit.callback(path.unlink, missing_ok=True)

    def _start_tracking(self) -> None:
        settings = self.settings
        if settings.tracking.uri is not None:
            self.tracking_uri = settings.tracking.uri
            if not is_healthy(self.tracking_uri):
                logger.warning("tracking server %s is not healthy", self.tracking_uri)
            return
        self.credentials = MlflowCredentials.at(settings.mlflow_credentials_file)
        stop_mlflow_leftovers(settings.mlflow_dir / "mlflow.db")
        server = EmbeddedTrackingServer(
            settings.mlflow_dir,
            host=settings.tracking.host,
            port=settings.tracking.port,
            startup_timeout_s=settings.tracking.startup_timeout_s,
            credentials=self.credentials,
        )
        self._exit.enter_context(server)
        self.tracking_uri = server.url
        self.supervisor = TrackingSupervisor(server)
        self.supervisor.start()
        self._exit.callback(self.supervisor.stop)  # before the server stops: no restart then

    def _find_local_ray(self) -> None:
        """Reattach to the Ray a killed stack left serving, or clear what a dead one left."""
        data_dir = self.settings.data_dir
        local = LocalRay.recorded(data_dir)
        if local is not None and local.alive():
            self.local_ray, self.reattached = local, True
            logger.warning("Ray of an earlier stack still serves (%s): reattaching", local.address)
            return
        if local is not None:
            local.stop()  # what is left of a head that died
            forget(data_dir)
        stop_leftovers(data_dir)  # a killed stack's HAProxy holds the API port

    def _start_ray(self) -> None:
        options, serving = self.settings.ray, self.settings.serving
        if options.address is None:
            local = self.local_ray or LocalRay.plan(self.settings.data_dir, options.dashboard_port)
            self.local_ray = local
            if not self.reattached:
                folder = haproxy_dir(self.settings.data_dir)
                runtime = serving.runtime.model_copy(update={"haproxy_dir": folder})
                # Serve's processes read these when Ray starts them; a cluster sets
                # them in its own `ray start` commands.
                with runtime.applied(
                    serving.limits.max_body_bytes, serving.app_name, plan_for(serving)
                ):
                    self._exit.callback(self._stop_local_ray)  # a failed start leaves nothing
                    local.start(options.num_cpus, options.object_store_memory_mb * 1024 * 1024)
                local.record(self.settings.data_dir)
            else:
                self._exit.callback(self._stop_local_ray)
            context = local.connect(options.log_to_driver)
        else:
            context = ray.init(address=options.address, log_to_driver=options.log_to_driver)
        self._exit.callback(ray.shutdown)
        if options.address is None:
            self._exit.callback(serve.shutdown)  # its own cluster: everything goes
        else:  # a cluster others may serve on: only gameserve's application goes
            self._exit.callback(serve.delete, serving.app_name)
        if self.local_ray is not None and not options.log_to_driver:
            # A local cluster's replica logs are on this machine: their errors reach
            # this console (a cluster's are in its own logs and the dashboard).
            logs = self.local_ray.session_dir / "logs" / "serve"
            follower = ReplicaErrorFollower(logs).start()
            self._exit.callback(follower.stop)
        if self.local_ray is not None:
            self.dashboard_url = self.local_ray.dashboard_url
        else:
            self.dashboard_url = options.dashboard_address or f"http://{context.dashboard_url}"

    def _stop_local_ray(self) -> None:
        """A clean stop takes Ray with it: its processes by their temp dir, then any HAProxy."""
        local = self.local_ray
        if local is None:
            return
        local.stop()
        forget(self.settings.data_dir)
        stop_leftovers(self.settings.data_dir)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit.close()
