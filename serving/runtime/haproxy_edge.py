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
- Refused at once with the JSON 503 ``use_local`` and ``Retry-After``, once the
  replicas are full (requests wait in the queue): best-effort work at once;
  critical and normal work when the wait a new request can expect exceeds
  ``wait_share`` of its deadline: its own ``X-Deadline-Ms``, else its class's
  (for normal work, or of any class above it, so that on its default it never
  takes a place critical work would be refused). The wait is estimated as
  Little's law has it: requests in the backend (in flight and queued) over the
  rate the backend takes them (``be_sess_rate``, which, while requests queue,
  is the rate the replicas finish them). Counting requests alone could not
  tell 0.3 ms single-NPC calls from 4 ms ticks. What is dequeued with its
  budget spent is refused by the replica, as ``use_local`` too, before its body
  is read (``serving.dataplane.plane.DataPlane.admit``); ``timeout queue``
  (``ServeRuntime.haproxy_timeout_queue_ms``) is only the safety net behind
  these, since HAProxy has one per backend and each request has its own deadline.

Only classified routes (those of the families) are refused here; health
checks, metrics, the model list and the admin API pass as Ray's config has them.
On every route, though, a plain-text 404 (Serve's own proxy, HAProxy's backup
server, before the application is deployed) becomes the 503 ``use_local`` with
``Retry-After``: a starting stack is unavailable, not without the route.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from models.errors import UseLocalError
from serving.dataplane.game_time import (
    DEADLINE_HEADER,
    PRIORITIES,
    PRIORITY_HEADER,
    STAMP_HEADER,
    Priority,
)

if TYPE_CHECKING:
    from serving.settings import ServingSettings

# HAProxy dequeues the lowest class first; unclassified requests rank as normal.
CLASS_NUMBER: dict[Priority, int] = {"critical": 0, "normal": 1, "best_effort": 2}


class EdgeClass(BaseModel):
    """The routes of one class and its shortest deadline."""

    priority: Priority
    prefixes: list[str]
    deadline_ms: float


class EdgePlan(BaseModel):
    """What the edge rules need, rendered by ``render`` (travels as JSON to the wrapper)."""

    backend: str  # the HTTP backend of the application's ingress replicas
    classes: list[EdgeClass]
    wait_share: float = Field(gt=0, le=1)
    retry_after_s: int = Field(ge=1)


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
    return EdgePlan(
        backend=backend_name(settings.app_name),
        classes=[by_class[p] for p in PRIORITIES if p in by_class],
        wait_share=settings.game_time.edge_wait_share,
        retry_after_s=max(1, round(settings.retry_after_s)),
    )


def use_local_body(message: str) -> str:
    """``UseLocalError``'s own body, as the app writes it, so clients parse one format."""
    return json.dumps(UseLocalError(message).to_dict())


def _refuse(plan: EdgePlan, message: str, condition: str, phase: str = "request") -> str:
    body = use_local_body(message).replace('"', '\\"')
    return (
        f"    http-{phase} return status 503 content-type application/json "
        f'hdr retry-after {plan.retry_after_s} hdr cache-control no-cache string "{body}" '
        f"if {condition}"
    )


# Until the application is deployed (a start, a restart), HAProxy's backup server, Serve's
# own proxy, answers every route with a plain-text 404 "Path ... not found": a client may
# take a 404 as permanent. The application's own answers are JSON, so a 404 that is not
# JSON can only be that proxy not knowing the route yet: a 503 with Retry-After instead.
_NOT_DEPLOYED = "{ status 404 } !{ res.hdr(content-type) -m sub json }"


def render(plan: EdgePlan, backend: str | None) -> str:
    """The frontend lines; ``backend`` is the app's backend, None before it exists (the
    queue rules need it, so until the app is deployed only the stamp and classes apply)."""
    lines = [
        "    # gameserve edge rules (serving/runtime/haproxy_edge.py)",
        f"    http-request set-header {STAMP_HEADER} t=%[date(0,us)]",
        _refuse(
            plan,
            "gameserve's application is not serving yet (starting or being deployed); "
            "decide locally and retry after Retry-After seconds",
            _NOT_DEPLOYED,
            phase="response",
        ),
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
        f"{{ req.hdr({PRIORITY_HEADER}) -i normal }}",
        "    http-request set-var(txn.gs_class) int(2) "
        f"if {{ req.hdr({PRIORITY_HEADER}) -i best_effort }}",
        "    http-request set-priority-class var(txn.gs_class)",
    ]
    if backend is None:
        return "\n".join(lines) + "\n"
    queued = f"gs_family {{ queue({backend}) gt 0 }}"
    lines += [
        # requests/s the backend takes (at least 1), and the wait ahead of a new one in ms
        f"    http-request set-var(txn.gs_rate) be_sess_rate({backend}),add(1)",
        f"    http-request set-var(txn.gs_wait_ms) be_conn({backend}),mul(1000),div(txn.gs_rate)",
    ]
    if any(entry.priority == "best_effort" for entry in plan.classes):
        lines.append(
            _refuse(
                plan,
                "best-effort work is refused while the replicas are full; use local behaviour "
                "and retry after Retry-After seconds",
                f"{queued} {{ var(txn.gs_class) -m int eq {CLASS_NUMBER['best_effort']} }}",
            )
        )
    # Each request's budget for waiting: a share of its own X-Deadline-Ms where it sends
    # one, else of its class's deadline. A class is never let in on its default where one
    # above it would be refused: at 10x, difficulty with its longer deadline took the
    # core from NPCs when each class had its own budget.
    share_pct = max(1, round(plan.wait_share * 100))
    budget_ms = 60_000
    for entry in plan.classes:
        budget_ms = min(budget_ms, max(1, int(entry.deadline_ms * plan.wait_share)))
        lines.append(
            f"    http-request set-var(txn.gs_budget) int({budget_ms}) if gs_{entry.priority}"
        )
    lines.append(
        f"    http-request set-var(txn.gs_budget) req.hdr_val({DEADLINE_HEADER}),mul({share_pct}),"
        f"div(100) if gs_family {{ req.hdr_val({DEADLINE_HEADER}) -m int gt 0 }}"
    )
    for entry in plan.classes:
        if entry.priority == "best_effort":
            continue
        lines.append(
            _refuse(
                plan,
                f"the replicas cannot answer {entry.priority} work within its deadline; use "
                "local behaviour and retry after Retry-After seconds",
                f"{queued} {{ var(txn.gs_class) -m int eq {CLASS_NUMBER[entry.priority]} }} "
                "{ var(txn.gs_wait_ms),sub(txn.gs_budget) -m int ge 0 }",
            )
        )
    return "\n".join(lines) + "\n"
