"""Settings of the serving layer: one block per model family, one for HTTP."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models import FAMILIES, get_family
from models.errors import ModelNotFoundError
from models.overrides import merged, merged_each
from models.spec import FamilySpec
from serving.app.autoscaling import Capacity, QueueDepthSettings, autoscaling_config
from serving.app.demand_forecast import ForecastSettings
from serving.dataplane.game_time import FamilyTiming, Priority, V2Deadline
from serving.runtime.substrate import ServeRuntime

# The Ray node label that says how a node was bought (KubeRay's workerGroupSpecs
# labels, ``ray start --labels``): a family that may not run on spot selects against it.
MARKET_LABEL = "gameserve.io/market"
Market = Literal["on_demand", "spot"]


class OnMiss(BaseModel):
    """What a request gets when the model cannot answer it in time, by protocol."""

    model_config = ConfigDict(extra="forbid")

    game: Literal["fallback", "error"] = Field(
        default="fallback",
        description="Game API: a game loop wants an answer, so the fallback, marked as such.",
    )
    v2: Literal["fallback", "error"] = Field(
        default="error",
        description="Open Inference Protocol v2: Triton clients expect a 504 or a 503.",
    )


class FamilyServing(BaseModel):
    """How one family's deployment runs."""

    # A family's declared defaults land here: a misspelt one must not pass unseen.
    model_config = ConfigDict(extra="forbid")

    num_replicas: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=0.5, ge=0, description="Ray CPUs reserved per replica.")
    num_gpus: float = Field(
        default=0.0, ge=0, le=1, description="Fraction of a GPU per replica; 0 runs on the CPU."
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per replica (placement 'deployment'): replicas "
        "go only to nodes that declare them, e.g. a node group started with "
        "--resources '{\"gpu_worker\": 4}'.",
    )
    max_batch_rows: int = Field(
        default=1024, ge=1, description="Rows (NPCs, players) one model call may take."
    )
    batch_wait_timeout_s: float = Field(
        default=0.002, ge=0, description="How long a batch waits to fill; well inside a tick."
    )
    max_ongoing_requests: int = Field(
        default=1024,
        ge=1,
        description="Per replica. Ray's default (5) starves @serve.batch; match max_batch_rows.",
    )
    max_queued_requests: int = Field(
        default=1024, ge=-1, description="Per caller; beyond it requests get 503 at once."
    )
    intra_op_threads: int = Field(default=1, ge=1)
    deadline_ms: float = Field(
        default=100.0,
        gt=0,
        le=60_000,
        description="A request's deadline when it sends none (X-Deadline-Ms), from receipt.",
    )
    priority: Priority = Field(
        default="normal",
        description="Its class under overload (X-Priority overrides it per request): "
        "best_effort is shed first, then normal; critical keeps its deadline.",
    )
    on_miss: OnMiss = Field(default_factory=OnMiss)
    v2_deadline: V2Deadline = Field(
        default="none",
        description="What a v2 request that sets no timeout (parameters.timeout, "
        "X-Deadline-Ms, a gRPC deadline) gets: 'none', Triton's rule (the server sets no "
        "timeout its client did not ask for; queues still refuse at once when full), or "
        "'family': deadline_ms, as on the game API.",
    )
    cache_ttl_s: float = Field(
        default=0.0, ge=0, le=3_600,
        description="Where the model cannot be afforded (deadline, overload), the model's "
        "answer to the same player's same question (the route's row_keys) at most this "
        "old stands in, as fallback_reason 'cached'; 0: never.",
    )  # fmt: skip
    payload_sample: float | None = Field(
        default=None, ge=0, le=1,
        description="Share of answered requests recorded; None: payload_log.sample.",
    )  # fmt: skip
    autoscaling: QueueDepthSettings | None = Field(
        default=None,
        description="The queue-depth policy of the family's own deployment; None: the "
        "default one, from num_replicas up to what the cluster holds (see scaling).",
    )
    scaling: Literal["queue_depth", "fixed"] = Field(
        default="queue_depth",
        description="A family with its own deployment follows its queue by default; "
        "'fixed' keeps num_replicas. A family in the ingress scales with the ingress.",
    )
    spot: bool = Field(
        default=False,
        description="Whether its own deployment's replicas may run on spot nodes (a node "
        "labelled gameserve.io/market=spot, which a cloud may reclaim at 30 s notice). "
        "False: never (label_selector !spot); nodes without the label count as on demand.",
    )
    shutdown_grace_s: float = Field(
        default=5.0, gt=0, le=300,
        description="How long a replica being stopped (scale-down, a drained node) may "
        "finish what it holds before Serve kills it. A family's calls take milliseconds; "
        "Serve's 20 s default also held each replica the policy withdrew from a full "
        "cluster, never placed, for that long.",
    )  # fmt: skip
    placement: Literal["auto", "ingress", "deployment"] = Field(
        default="auto",
        description="Where the model runs. 'ingress': in the ingress replica's process, no "
        "Ray hop per request (serving/dataplane/colocated.py). 'deployment': its own Ray Serve "
        "deployment, for GPUs, cross-request batching and its own autoscaling. 'auto': "
        "'deployment' when num_gpus, autoscaling or resources is set, 'ingress' otherwise.",
    )

    @model_validator(mode="after")
    def _placement_fits(self) -> FamilyServing:
        if self.scaling == "fixed" and self.autoscaling is not None:
            raise ValueError("autoscaling: set, but scaling is 'fixed'")
        needs_own = {
            "num_gpus": self.num_gpus > 0,
            "autoscaling": self.autoscaling is not None,
            "resources": bool(self.resources),
        }
        if self.placement == "ingress" and any(needs_own.values()):
            field = next(name for name, needed in needs_own.items() if needed)
            raise ValueError(
                f"placement: 'ingress' runs on the ingress's CPU and scales with it; "
                f"{field} needs placement 'deployment' (or 'auto')"
            )
        return self

    @property
    def colocated(self) -> bool:
        """True when the model runs inside the ingress replica."""
        if self.placement == "auto":
            return self.num_gpus == 0 and self.autoscaling is None and not self.resources
        return self.placement == "ingress"

    def policy(self) -> QueueDepthSettings | None:
        """The deployment's queue-depth policy; None when its replicas are fixed."""
        if self.scaling == "fixed":
            return None
        return self.autoscaling or QueueDepthSettings(min_replicas=self.num_replicas)

    def fitted_policy(self, capacity: Capacity) -> QueueDepthSettings | None:
        """The queue-depth policy with its ceiling fitted to ``capacity``; None: fixed."""
        policy = self.policy()
        if policy is None:
            return None
        return policy.fitted(
            capacity.replicas(max(self.num_cpus, self.intra_op_threads), self.num_gpus)
        )

    def replicas_config(self, capacity: Capacity) -> dict[str, Any]:
        """The deployment options that set its replica count, within ``capacity``."""
        policy = self.fitted_policy(capacity)
        if policy is None:
            return {"num_replicas": self.num_replicas}
        return {"autoscaling_config": autoscaling_config(policy)}

    @property
    def baseline_replicas(self) -> int:
        """Replicas a challenger runs with: what the champion has when quiet."""
        policy = self.policy()
        if policy is None:
            return self.num_replicas
        return max(policy.min_replicas, 1)


class AuthSettings(BaseModel):
    """API keys (``serving/protocol/keys.py``) and their default rate limits."""

    mode: Literal["on", "off"] = Field(
        default="on",
        description="'off' is for loopback-only development: every route opens, and the "
        "stack refuses to start unless serving.host is a loopback address.",
    )
    keys_file: Path | None = Field(
        default=None, description="The key file; the local stack uses <data_dir>/keys.json."
    )
    reload_interval_s: float = Field(default=1.0, gt=0, description="How often replicas look.")
    default_rate_per_s: float | None = Field(
        default=None, gt=0, description="Requests/s of a key that sets none; None: unlimited."
    )
    default_burst: int = Field(default=100, ge=1)


class LimitSettings(BaseModel):
    """What one request may cost an ingress replica, enforced before any model work."""

    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="413 beyond it, from HAProxy's Content-Length check and the replica's "
        "count of the bytes read; a 1,024-NPC tick as JSON fits well within the default.",
    )
    max_in_flight: int = Field(
        default=256,
        ge=1,
        description="Requests one ingress replica works on at once; beyond it 503 with "
        "Retry-After at once, instead of a queue whose wait grows to seconds.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed by CORS; none by default."
    )


class PayloadLogSettings(BaseModel):
    """Recording answered requests for replay and training (serving/dataplane/payload_log.py)."""

    dir: Path | None = Field(
        default=None,
        description="Where each ingress replica writes Parquet files; None records nothing. "
        "The local stack uses <data_dir>/payloads. Files are local to the replica's node.",
    )
    sample: float = Field(
        default=0.01, ge=0, le=1,
        description="Share of answered requests recorded, for a family that sets none.",
    )  # fmt: skip
    max_queue: int = Field(
        default=10_000, ge=1, description="Records waiting for the writer; beyond, dropped."
    )
    rotate_rows: int = Field(default=50_000, ge=1, description="Rows per file at most.")
    rotate_s: float = Field(default=60.0, gt=0, description="A file is written this often.")
    salt_file: Path | None = Field(
        default=None,
        description="A secret whose bytes salt the routing-key hash in the files, so knowing a "
        "player id does not find that player's rows. The local stack uses its signing key, so "
        "the salt rotates with it; None: unsalted.",
    )


class GameTimeSettings(BaseModel):
    """Deadlines, fallbacks and shedding (serving/dataplane/game_time.py, admission.py)."""

    fallback_reserve_ms: float = Field(
        default=1.0,
        ge=0,
        description="Time kept back from a deadline to compute and send the fallback.",
    )
    normal_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Normal work is admitted while a replica works on fewer than this "
        "share of limits.max_in_flight inference requests.",
    )
    best_effort_share: float = Field(default=0.25, gt=0, le=1)
    edge_wait_share: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="HAProxy refuses critical and normal work (503 use_local) while the "
        "replicas are full and the time it expects a new request to spend in the stack "
        "exceeds this share of its deadline (serving/runtime/haproxy_edge.py); the rest "
        "is left for the network and the answer's way back.",
    )
    normal_lag_ms: float = Field(
        default=25.0,
        gt=0,
        description="Normal work is not admitted while the replica's event loop runs this "
        "late: its queue would eat the deadline before the model runs.",
    )
    best_effort_lag_ms: float = Field(default=3.0, gt=0)


class GrpcSettings(BaseModel):
    """The Open Inference Protocol v2 over gRPC, served by every ingress replica."""

    port: int | None = Field(
        default=8001,
        ge=1,
        le=65535,
        description="Triton's gRPC port by default; None serves HTTP only. Every ingress "
        "replica on a node listens on it (SO_REUSEPORT: the kernel spreads connections "
        "across them), bound to serving.host.",
    )
    max_concurrent_rpcs: int = Field(
        default=256,
        ge=1,
        description="Calls one replica works on at once; beyond it RESOURCE_EXHAUSTED at "
        "once. Messages are bounded by limits.max_body_bytes.",
    )
    drain_s: float = Field(
        default=5.0,
        ge=0,
        description="On a scale-down or redeploy, how long calls in flight may finish "
        "after the replica stops taking new ones.",
    )
    threads: int = Field(
        default=4,
        ge=1,
        le=64,
        description="grpcio's threads per replica reading and writing HTTP/2; each call's "
        "work runs on the replica's event loop.",
    )


class AdminSettings(BaseModel):
    """The admin API (rollouts, champions, keys), served by the stack process."""

    host: str = Field(
        default="127.0.0.1", description="Bind address; put it on an operators' network only."
    )
    port: int = Field(default=8090, ge=0, le=65535, description="0 picks a free port.")


def host_port(host: str, port: int) -> str:
    """``host:port`` as URLs, gRPC targets and logs write it (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServingSettings(BaseModel):
    """The HTTP surface and the families it serves."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    app_name: str = "gameserve"
    max_rows_per_request: int = Field(
        default=1024, ge=1, description="Largest NPC tick or player batch one request may carry."
    )
    retry_after_s: float = Field(default=1.0, gt=0, description="Sent with 503 when overloaded.")
    family_specs: list[FamilySpec] = Field(
        default_factory=list,
        description="Families declared by spec files, carried to every replica; filled at "
        "start from the files in the top-level families_dir.",
    )
    runtime: ServeRuntime = Field(default_factory=ServeRuntime)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    game_time: GameTimeSettings = Field(default_factory=GameTimeSettings)
    payload_log: PayloadLogSettings = Field(default_factory=PayloadLogSettings)
    proxy_location: Literal["HeadOnly", "EveryNode"] = Field(
        default="HeadOnly",
        description="Where Serve runs HTTP proxies. HeadOnly keeps GPU workers free of "
        "proxies, so an idle one leaves the cluster as soon as its replicas do.",
    )
    access_log: bool = Field(
        default=False,
        description="Ray Serve's per-request log line in every replica. Off by default: "
        "at game-server rates it costs a visible share of an ingress replica's CPU, and "
        "the load balancer in front logs requests anyway; errors are logged either way.",
    )
    ingress_replicas: int = Field(
        default=2,
        ge=1,
        description="Ingress replicas when not autoscaled. Two by default: a replica is one "
        "event loop on one core, HAProxy balances across them (two carry about a third "
        "more than one on 2 cores), and a crashed or restarting one leaves the other "
        "serving.",
    )
    ingress_num_cpus: float = Field(default=0.25, ge=0)
    ingress_autoscaling: QueueDepthSettings | None = Field(
        default_factory=lambda: QueueDepthSettings(
            min_replicas=2, forecast=ForecastSettings(requests_per_replica_s=1500.0)
        ),
        description="Under HTTP load the ingress is where requests queue, so it follows its "
        "queue by default: two replicas at least (see ingress_replicas), one per CPU of "
        "the cluster at most, and a floor raised ahead of the request rate a forecast "
        "expects (about 1,500 small requests/s per replica, measured on 2 cores). None "
        "keeps ingress_replicas fixed.",
    )
    capacity: Capacity | None = Field(
        default=None,
        description="The cluster at its largest, for policies without max_replicas. None: "
        "what Ray sees when the application is deployed (the gateway fills it in), or this "
        "machine. Set it where workers join on demand (ray up, KubeRay).",
    )

    @model_validator(mode="after")
    def _auth_off_only_on_loopback(self) -> ServingSettings:
        if self.auth.mode == "off":
            for field, host in (("host", self.host), ("admin.host", self.admin.host)):
                if not is_loopback(host):
                    raise ValueError(
                        f"auth.mode: 'off' is for loopback only; serving.{field} is {host!r}"
                    )
        return self

    def cluster_capacity(self) -> Capacity:
        return self.capacity or Capacity.this_machine()

    def ingress_policy(self) -> QueueDepthSettings | None:
        """The ingress's queue-depth policy with its ceiling fitted; None: fixed."""
        if self.ingress_autoscaling is None:
            return None
        # One event loop per replica: more replicas than cores only contend.
        return self.ingress_autoscaling.fitted(self.cluster_capacity().replicas(1.0))

    def ingress_replicas_config(self) -> dict[str, Any]:
        policy = self.ingress_policy()
        if policy is None:
            return {"num_replicas": self.ingress_replicas}
        return {"autoscaling_config": autoscaling_config(policy)}

    families: dict[str, FamilyServing] = Field(
        default_factory=lambda: {name: family_defaults(name) for name in FAMILIES},
        description="Per family; each family declares its own defaults (its "
        "serving_defaults), and a family left out here runs on them.",
    )

    @field_validator("families", mode="before")
    @classmethod
    def _over_declared_defaults(cls, given: Any) -> Any:
        return merged_each(given, over_declared)

    def with_declared_defaults(self) -> ServingSettings:
        """These settings with each family's block merged again over its declared defaults.

        For families registered after these settings were built (spec files): their
        overrides met only the generic defaults then.
        """
        families = {name: over_declared(name, block) for name, block in self.families.items()}
        return self.model_copy(
            update={"families": {n: FamilyServing.model_validate(b) for n, b in families.items()}}
        )

    def family(self, name: str) -> FamilyServing:
        return self.families[name] if name in self.families else family_defaults(name)

    def timing(self, name: str) -> FamilyTiming:
        """A family's game-time terms, as the data plane applies them."""
        family = self.family(name)
        return FamilyTiming(
            deadline_ms=family.deadline_ms,
            priority=family.priority,
            on_miss_game=family.on_miss.game,
            on_miss_v2=family.on_miss.v2,
            reserve_ms=self.game_time.fallback_reserve_ms,
            v2_deadline=family.v2_deadline,
            cache_ttl_s=family.cache_ttl_s,
        )

    def payload_sample(self, name: str) -> float:
        """The share of ``name``'s answered requests the payload log records."""
        own = self.family(name).payload_sample
        return self.payload_log.sample if own is None else own


def family_defaults(name: str) -> FamilyServing:
    return FamilyServing.model_validate(get_family(name).serving_defaults)


def over_declared(name: str, given: Any) -> Any:
    """A family's serving block as given, field by field over what the family declares."""
    try:
        declared = get_family(name).serving_defaults
    except ModelNotFoundError:  # not registered yet: with_declared_defaults merges it later
        return given
    return merged(declared, given)
