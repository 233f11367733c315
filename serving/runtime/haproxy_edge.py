"""Game time at the edge: HAProxy stamps, classes and refuses before a replica sees a byte.

An overload is decided where requests wait. Requests that the replicas cannot
take yet wait in HAProxy's queue; only HAProxy can order that queue by class
and refuse work that cannot be served in time for almost nothing (a refused
request costs HAProxy microseconds; a replica pays its Python stack for it).
So gameserve renders these rules from its own settings (``EdgePlan``, built
by ``plan_for`` from the families' declared classes and deadlines), and the
``gameserve-haproxy`` wrapper adds them to the frontend of the config Ray
renders (``serving/runtime/haproxy_listeners.py``):

- ``X-Request-Start: t=<µs>``: when the edge received the request. Replicas
  count each deadline from it (``serving.dataplane.game_time.edge_received``);
  a client's own header is replaced.
- Each route's class (``/v1/npc/act`` and ``/v2/models/npc-behavior/…`` are
  ``critical``...), lowered (never raised) by ``X-Priority``: HAProxy does not
  know keys, the replica applies a key's ceiling. The class is the request's
  ``set-priority-class``: critical work leaves the queue first.
- Refused at once with the JSON 503 ``use_local`` and ``Retry-After``:
  best-effort work whenever anything waits in the queue or it would hold more
  than its share of the replicas' slots; normal work once the queue holds more
  than half of what the replicas could serve within the shortest deadline;
  critical work once it holds all of that. What is queued waits at most
  ``timeout queue``, the shortest class deadline: no class waits past its
  deadline in the queue (the 503 that follows says the same: use local).

Only classified routes (those of the families) are refused here; health
checks, metrics, the model list and the admin API pass as Ray's config has them.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from serving.dataplane.game_time import PRIORITIES, Priority

if TYPE_CHECKING:
    from serving.settings import ServingSettings

# HAProxy dequeues the lowest class first; unclassified requests rank as normal.
CLASS_NUMBER: dict[Priority, int] = {"critical": 0, "normal": 1, "best_effort": 2}
STAMP_HEADER = "X-Request-Start"
USE_LOCAL_CODE = "use_local"


class EdgeClass(BaseModel):
    """The routes of one class and its shortest deadline."""

    priority: Priority
    prefixes: list[str]
    deadline_ms: float


class EdgePlan(BaseModel):
    """What the edge rules need, rendered by ``render`` (travels as JSON to the wrapper)."""

    backend: str  # the HTTP backend of the application's ingress replicas
    classes: list[EdgeClass]
    server_maxconn: int = Field(ge=1)
    best_effort_share: float = Field(gt=0, le=1)
    queue_per_replica: int = Field(ge=1)
    retry_after_s: int = Field(ge=1)

    @property
    def queue_timeout_ms(self) -> int:
        """The longest wait in the queue: the shortest deadline of any class."""
        return max(1, int(min(c.deadline_ms for c in self.classes)))


def backend_name(app_name: str) -> str:
    """The HTTP backend Ray's HAProxy manager writes for Serve application ``app_name``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", app_name.replace("#", "-").replace("/", "."))
    return f"http-{safe}"


def plan_for(settings: ServingSettings) -> EdgePlan:
    """The edge rules of ``settings``' families: each family's game route and v2 routes
    in its declared class."""
    from models import get_family

    by_class: dict[Priority, EdgeClass] = {}
    for name in sorted(settings.families):
        timing = settings.timing(name)
        route = get_family(name).game_route
        prefixes = [f"/v2/models/{name}/"] + ([f"/v1{route.path}"] if route else [])
        entry = by_class.setdefault(
            timing.priority, EdgeClass(priority=timing.priority, prefixes=[], deadline_ms=1e9)
        )
        entry.prefixes += prefixes
        entry.deadline_ms = min(entry.deadline_ms, timing.deadline_ms)
    runtime = settings.runtime
    return EdgePlan(
        backend=backend_name(settings.app_name),
        classes=[by_class[p] for p in PRIORITIES if p in by_class],
        server_maxconn=runtime.haproxy_server_maxconn,
        best_effort_share=settings.game_time.best_effort_share,
        queue_per_replica=runtime.haproxy_queue_per_replica,
        retry_after_s=max(1, round(settings.retry_after_s)),
    )


def use_local_body(message: str) -> str:
    """The app's own error shape (serving/http/errors.py), so clients parse one format."""
    return json.dumps({"error": {"code": USE_LOCAL_CODE, "message": message}})


def _refuse(plan: EdgePlan, message: str, condition: str) -> str:
    body = use_local_body(message).replace('"', '\\"')
    return (
        f"    http-request return status 503 content-type application/json "
        f'hdr retry-after {plan.retry_after_s} hdr cache-control no-cache string "{body}" '
        f"if {condition}"
    )


def render(plan: EdgePlan, backend: str | None) -> str:
    """The frontend lines; ``backend`` is the app's backend, None before it exists (the
    queue rules need it, so until the app is deployed only the stamp and classes apply)."""
    lines = [
        "    # gameserve edge rules (serving/runtime/haproxy_edge.py)",
        f"    http-request set-header {STAMP_HEADER} t=%[date(0,us)]",
    ]
    if not plan.classes:
        return "\n".join(lines) + "\n"
    every = [prefix for entry in plan.classes for prefix in entry.prefixes]
    lines.append(f"    acl gs_family path_beg {' '.join(every)}")
    for entry in plan.classes:
        lines.append(f"    acl gs_{entry.priority} path_beg {' '.join(entry.prefixes)}")
    lines.append(f"    http-request set-var(txn.gs_class) int({CLASS_NUMBER['normal']})")
    for entry in plan.classes:
        number = CLASS_NUMBER[entry.priority]
        lines.append(f"    http-request set-var(txn.gs_class) int({number}) if gs_{entry.priority}")
    lines += [
        # X-Priority lowers a class here, never raises it: HAProxy does not know keys.
        "    http-request set-var(txn.gs_class) int(1) if { var(txn.gs_class) -m int lt 1 } "
        "{ req.hdr(x-priority) -i normal }",
        "    http-request set-var(txn.gs_class) int(2) if { req.hdr(x-priority) -i best_effort }",
        "    http-request set-priority-class var(txn.gs_class)",
    ]
    if backend is None:
        return "\n".join(lines) + "\n"
    share_pct = max(1, round(plan.best_effort_share * 100))
    best_effort = "gs_family { var(txn.gs_class) -m int eq 2 }"
    lines += [
        f"    http-request set-var(txn.gs_slots) nbsrv({backend}),mul({plan.server_maxconn})",
        f"    http-request set-var(txn.gs_queue) nbsrv({backend}),mul({plan.queue_per_replica})",
        "    http-request set-var(txn.gs_queue_normal) var(txn.gs_queue),div(2)",
        _refuse(
            plan,
            "best-effort work is refused while the replicas are full; use local behaviour "
            "and retry after Retry-After seconds",
            f"{best_effort} {{ queue({backend}) gt 0 }} || {best_effort} "
            f"{{ be_conn({backend}),mul(100),div(txn.gs_slots) -m int ge {share_pct} }}",
        ),
        _refuse(
            plan,
            "normal work is refused while the queue is long; use local behaviour and "
            "retry after Retry-After seconds",
            f"gs_family {{ var(txn.gs_class) -m int eq 1 }} "
            f"{{ queue({backend}),sub(txn.gs_queue_normal) -m int ge 0 }}",
        ),
        _refuse(
            plan,
            "the queue holds more than the replicas can serve within the deadline; use "
            "local behaviour and retry after Retry-After seconds",
            f"gs_family {{ queue({backend}),sub(txn.gs_queue) -m int ge 0 }}",
        ),
    ]
    return "\n".join(lines) + "\n"
