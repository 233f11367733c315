"""Game time: a request's deadline, its priority class, and an answer that says its source.

A game server decides on ticks; an answer after the tick is worthless and an
error in the game loop is worse than a plain default. So each request carries
a deadline (the family's by default, ``X-Deadline-Ms`` to change it), work
whose deadline has passed is never started, and when the model cannot answer
in time the family's fallback does, marked as such (``Answer.source``). The
data plane applies these terms (``serving.dataplane.plane``); admission under
overload is ``serving.dataplane.admission``.

A deadline counts from the edge: HAProxy stamps each request's arrival
(``X-Request-Start: t=<microseconds since the epoch>``, the convention load
balancers and APM tools share), so the time a request spent in HAProxy's
queue, the socket backlog and the replica's event loop is part of its budget
(``edge_received``). A request whose budget is spent by the time the replica
reads its headers is refused at once (``UseLocalError``): no answer could
arrive in time, so the caller's own behaviour decides.

Deadlines travel between processes (to a family deployment's replicas) as
wall-clock times: the monotonic clock does not cross machines.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from models.errors import DeadlineExceededError, InvalidInputError

Priority = Literal["critical", "normal", "best_effort"]
PRIORITIES: tuple[Priority, ...] = ("critical", "normal", "best_effort")  # first goes last
# What a v2 request without a timeout of its own gets: the family's deadline, or
# none (Triton's rule: the server sets no timeout its client did not ask for).
V2Deadline = Literal["family", "none"]
OnMissChoice = Literal["fallback", "error"]
Protocol = Literal["game", "v2"]
Source = Literal["model", "fallback"]
# Whose answer: the champion's, the rollout challenger's, or the family's fallback.
AnsweredBy = Literal["champion", "challenger", "fallback"]
# Why the fallback answered: the model could not in time, was over capacity,
# failed, or answered with outputs that break the family's checks; "cached": the
# model could not be afforded (in time or under load) and the same player's answer of
# moments ago stood in for it (serving/dataplane/answer_cache.py).
FallbackReason = Literal["deadline", "overload", "error", "invalid_output", "cached"]
REASONS: tuple[FallbackReason, ...] = ("deadline", "overload", "error", "invalid_output", "cached")

# The request headers that set a request's terms, lower-case (HTTP and gRPC metadata),
# and the one the edge stamps each request's arrival with.
DEADLINE_HEADER = "x-deadline-ms"
PRIORITY_HEADER = "x-priority"
STAMP_HEADER = "x-request-start"

# Generous: a deadline is a tick's AI budget, and one beyond a minute is a typo.
MAX_DEADLINE_MS = 60_000.0
# A stamp older than this is a clock out of step, not a queue: it is ignored.
MAX_EDGE_AGE_S = 60.0


def edge_received(stamp: str | None, now: float, wall_now: float) -> float:
    """When the edge received a request, on this process's monotonic clock (``now``).

    ``stamp`` is an ``X-Request-Start`` value: ``t=`` and the wall-clock time in
    microseconds (HAProxy's ``%[date(0,us)]``), milliseconds or seconds, told
    apart by magnitude as APM agents do. The result is never later than ``now``,
    so a stamp can only shorten a request's budget: a caller forging one
    (possible only where no HAProxy in front replaces it) harms no one else.
    A missing, malformed or implausible stamp (older than a minute: clocks out of
    step) leaves ``now``.
    """
    if not stamp:
        return now
    text = stamp.strip().removeprefix("t=")
    try:
        value = float(text)
    except ValueError:
        return now
    # seconds ~1.7e9, milliseconds ~1.7e12, microseconds ~1.7e15
    seconds = value / 1e6 if value > 1e14 else value / 1e3 if value > 1e11 else value
    age = wall_now - seconds
    if not 0.0 < age <= MAX_EDGE_AGE_S:  # also NaN: not a number of seconds
        return now
    return now - age


def outranks(priority: Priority, other: Priority) -> bool:
    """True when ``priority`` is served before ``other`` under overload."""
    return PRIORITIES.index(priority) < PRIORITIES.index(other)


@dataclass(frozen=True, slots=True)
class Deadline:
    """The moment an answer stops being useful, on this process's monotonic clock."""

    at: float
    budget_ms: float

    @classmethod
    def after(cls, budget_ms: float, received: float | None = None) -> Deadline:
        start = time.monotonic() if received is None else received
        return cls(start + budget_ms / 1000, budget_ms)

    def remaining_s(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def wall_at(self) -> float:
        """The same moment on the wall clock, for another process."""
        return time.time() + self.remaining_s()

    def tightened(self, budget_ms: float, received: float) -> Deadline:
        """The earlier of this deadline and ``budget_ms`` from ``received``."""
        other = Deadline.after(budget_ms, received)
        return other if other.at < self.at else self


def not_started() -> DeadlineExceededError:
    """What work dropped unrun gets: its deadline passed while it waited."""
    return DeadlineExceededError("the deadline passed before the model ran")


def parse_budget_ms(value: str | float | None, field_name: str, scale: float = 1.0) -> float | None:
    """A deadline budget in ms from a header or parameter (``scale`` converts its unit)."""
    if value is None:
        return None
    try:
        budget = float(value) * scale
    except (TypeError, ValueError):
        raise InvalidInputError(f"{field_name}: not a number: {value!r}") from None
    if not 0 < budget <= MAX_DEADLINE_MS:  # also refuses NaN
        raise InvalidInputError(
            f"{field_name}: must be above 0 and at most {MAX_DEADLINE_MS:.0f} ms, got {value!r}"
        )
    return budget


def parse_priority(value: str | None, default: Priority) -> Priority:
    if value is None:
        return default
    for priority in PRIORITIES:
        if value.strip().lower() == priority:
            return priority
    raise InvalidInputError(f"x-priority: one of {', '.join(PRIORITIES)}; got {value!r}")


@dataclass(frozen=True)
class FamilyTiming:
    """A family's game-time terms as settings resolve them (serving.settings)."""

    deadline_ms: float
    priority: Priority
    on_miss_game: OnMissChoice
    on_miss_v2: OnMissChoice
    # Kept back from the deadline to compute and send a fallback in time.
    reserve_ms: float = 1.0
    v2_deadline: V2Deadline = "none"
    # How old an answer the same player got may be to stand in for the model; 0: never.
    cache_ttl_s: float = 0.0

    def on_miss(self, protocol: Protocol) -> OnMissChoice:
        return self.on_miss_game if protocol == "game" else self.on_miss_v2

    def default_deadline_ms(self, protocol: Protocol) -> float:
        """The budget of a request that sets none."""
        if protocol == "v2" and self.v2_deadline == "none":
            return MAX_DEADLINE_MS
        return self.deadline_ms

    def call(
        self,
        protocol: Protocol,
        received: float | None = None,
        deadline_ms: float | None = None,
        priority: Priority | None = None,
        admitted: bool = True,
    ) -> Call:
        """A request's terms: these defaults, less what the request itself set."""
        received = time.monotonic() if received is None else received
        return Call(
            deadline=Deadline.after(deadline_ms or self.default_deadline_ms(protocol), received),
            priority=priority or self.priority,
            on_miss=self.on_miss(protocol),
            reserve_ms=self.reserve_ms,
            admitted=admitted,
            received=received,
        )


@dataclass
class Call:
    """One request's game-time terms, settled before its body is parsed."""

    deadline: Deadline
    priority: Priority
    on_miss: OnMissChoice
    reserve_ms: float = 1.0
    # False when admission found this request's class over its bound: it gets
    # the fallback (or the overload error) without reaching the model.
    admitted: bool = True
    received: float = field(default_factory=time.monotonic)  # when the ingress received it

    def model_time_s(self) -> float:
        """How long the model may take: until the deadline, less the fallback's reserve."""
        return self.deadline.remaining_s() - self.reserve_ms / 1000


@dataclass(frozen=True)
class Answer:
    """Output tensors, the version that produced them, and whose answer it is."""

    outputs: dict[str, np.ndarray]
    version: str | None
    source: Source = "model"
    fallback_reason: FallbackReason | None = None
    challenger: bool = False  # the rollout's challenger answered (its cohort, or a shadow)

    @property
    def role(self) -> AnsweredBy:
        if self.source == "fallback":
            return "fallback"
        return "challenger" if self.challenger else "champion"

    @property
    def rows(self) -> int:
        return int(next(iter(self.outputs.values())).shape[0])

    def provenance(self) -> dict[str, Any]:
        """``source`` and, for a fallback, ``fallback_reason``: what every answer says."""
        if self.fallback_reason is None:
            return {"source": self.source}
        return {"source": self.source, "fallback_reason": self.fallback_reason}


@dataclass
class FamilyCounts:
    """What game time did to one family's requests, since start (or since drained)."""

    fallbacks: Counter[str] = field(default_factory=Counter)  # by reason
    missed: Counter[str] = field(default_factory=Counter)  # errors instead, by reason
    expired: int = 0  # dropped before the model ran: their deadline had passed
    late: int = 0  # the model answered, after the deadline
    shed: Counter[str] = field(default_factory=Counter)  # refused at admission, by class
    # Refused on arrival (use_local): the budget was spent before the replica read it.
    spent_on_arrival: int = 0
    # X-Priority above what the caller's key allows, lowered to its ceiling.
    priority_lowered: int = 0

    def add(self, other: FamilyCounts) -> None:
        self.fallbacks.update(other.fallbacks)
        self.missed.update(other.missed)
        self.expired += other.expired
        self.late += other.late
        self.shed.update(other.shed)
        self.spent_on_arrival += other.spent_on_arrival
        self.priority_lowered += other.priority_lowered

    def as_dict(self) -> dict[str, Any]:
        return {
            "fallbacks": {reason: self.fallbacks[reason] for reason in REASONS},
            "errors_on_miss": {reason: self.missed[reason] for reason in REASONS},
            "expired": self.expired,
            "late": self.late,
            "shed": {priority: self.shed[priority] for priority in PRIORITIES},
            "spent_on_arrival": self.spent_on_arrival,
            "priority_lowered": self.priority_lowered,
        }

    def __bool__(self) -> bool:
        return bool(
            self.fallbacks or self.missed or self.expired or self.late or self.shed
            or self.spent_on_arrival or self.priority_lowered
        )  # fmt: skip


@dataclass
class GameTimeCounters:
    """Per family; replicas drain them to the collector, which keeps the totals."""

    families: dict[str, FamilyCounts] = field(default_factory=dict)

    def family(self, name: str) -> FamilyCounts:
        counts = self.families.get(name)
        if counts is None:
            counts = self.families[name] = FamilyCounts()
        return counts

    def drain(self) -> dict[str, FamilyCounts]:
        drained = {name: counts for name, counts in self.families.items() if counts}
        self.families = {}
        return drained

    def merge(self, drained: dict[str, FamilyCounts]) -> None:
        for name, counts in drained.items():
            self.family(name).add(counts)
