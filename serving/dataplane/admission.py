"""Admission by priority class: under overload, best-effort work goes first, critical last.

An ingress replica is one event loop. When more arrives than it can run, the
wait is in its ready queue, and every request queued there spends its
deadline before any model sees it. Two signals say the loop is falling behind:
how many inference requests it is working on (per class, bounded), and how
late its own timer fires (``LoopLag``). A class is admitted only while both
stay under its bounds:

- ``best_effort`` (personalization): refused with 503 and ``Retry-After`` at
  the first sign, before its body is even parsed;
- ``normal`` (difficulty): past its bounds (lateness: a standing backlog
  only) it is answered by its fallback (or an overload error), without model
  work;
- ``critical`` (NPC): bounded only by ``max_in_flight``; the shedding of the
  others is what keeps its deadline while the CPU allows.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from models.errors import OverloadedError, UseLocalError
from serving.dataplane.events import Events, Shed
from serving.dataplane.game_time import (
    Call,
    FamilyTiming,
    GameTimeCounters,
    Priority,
    Protocol,
    outranks,
    parse_priority,
)

# How often the probe looks, and over how many looks lateness must persist.
PROBE_INTERVAL_S = 0.005
PERSIST_LOOKS = 4
# An idle replica stops looking (no wakeups for nothing); the next request restarts it.
IDLE_STOP_S = 2.0


class LoopLag:
    """How late this event loop runs, measured by a timer of its own.

    A timer due every 5 ms that fires 12 ms late means the ready queue holds
    12 ms of work: what a request arriving now waits before it runs. The
    figure is the least lateness of the last ``PERSIST_LOOKS`` looks (as
    CoDel judges a standing queue by its minimum delay): one slow callback, a
    garbage collection or another thread holding the GIL makes one look late,
    not four in a row; a backlog makes every look late.

    A burst that lands in one read of the sockets runs in one pass of the
    loop, before any timer: no look happens during it. So ``now_s`` also
    counts how overdue the next look is at this moment: the time the loop has
    spent on requests ahead of this one without coming back to its timers.
    """

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._reset()
        self._used = 0.0

    def _reset(self) -> None:
        self.lag_s = 0.0
        self._due = float("inf")  # no look pending: nothing is overdue
        self._recent: deque[float] = deque([0.0] * PERSIST_LOOKS, maxlen=PERSIST_LOOKS)

    def ensure_running(self) -> None:
        """Called by every admission: keeps the probe looking while requests come."""
        self._used = time.monotonic()
        if self._task is None or self._task.done():
            self._reset()  # a look from before a stop would read as hours overdue
            self._task = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        try:
            while time.monotonic() - self._used < IDLE_STOP_S:
                self._due = time.monotonic() + PROBE_INTERVAL_S
                await asyncio.sleep(PROBE_INTERVAL_S)
                self._recent.append(max(time.monotonic() - self._due, 0.0))
                self.lag_s = min(self._recent)
        finally:
            self._reset()

    def now_s(self) -> float:
        """How far behind the loop runs now: the standing lag, or the overdue look."""
        return max(self.lag_s, time.monotonic() - self._due)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


@dataclass(frozen=True)
class AdmissionBounds:
    """Per class: in-flight inference requests and loop lag beyond which it is not admitted."""

    max_in_flight: int = 256
    normal_share: float = 0.5
    best_effort_share: float = 0.25
    normal_lag_ms: float = 25.0
    best_effort_lag_ms: float = 3.0
    retry_after_s: float = 1.0


class Occupancy:
    """Requests in this replica on average since the last reading: what it scales by.

    Serve counts a replica's ongoing requests, but a request answered on the loop
    without awaiting is ongoing only while it runs; the wait is in the sockets
    and the ready queue, where Serve never looks, so under sustained overload
    that count reads about 0 (measured: 2 replicas, 32 clients, 0 most samples).
    Little's law over what admission sees does not miss it: the time admitted
    requests spent here, plus arrivals times the loop's standing lag (what each
    waited before it started), over the time elapsed. "Here" starts at the edge's
    stamp where there is one: HAProxy gives each replica only a few requests at
    once and queues the rest itself, so time in that queue is this replica's
    backlog too (without it, sustained queueing never added an ingress replica).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since = clock()
        self._busy_s = 0.0
        self._arrivals = 0

    def add(self, seconds: float) -> None:
        self._busy_s += seconds
        self._arrivals += 1

    def read(self, lag_s: float) -> float:
        """The average since the last reading, which starts the next one."""
        now = self._clock()
        elapsed = max(now - self._since, 1e-3)
        value = (self._busy_s + self._arrivals * lag_s) / elapsed
        self._since, self._busy_s, self._arrivals = now, 0.0, 0
        return value


class Ticket:
    """One admitted (or not) request; leaving releases its place in its class."""

    __slots__ = ("_admission", "_started", "admitted", "priority")

    def __init__(
        self,
        admission: Admission,
        priority: Priority,
        admitted: bool,
        received: float | None = None,
    ) -> None:
        self._admission = admission
        self.priority = priority
        self.admitted = admitted
        self._started = time.monotonic() if received is None else received

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *_: object) -> None:
        self._admission.in_flight[self.priority] -= 1
        self._admission.occupancy.add(time.monotonic() - self._started)


class Admission:
    """This replica's admission control; see the module docstring."""

    def __init__(self, bounds: AdmissionBounds | None = None) -> None:
        self.bounds = bounds or AdmissionBounds()
        self.in_flight: Counter[str] = Counter()
        self.lag = LoopLag()
        self.occupancy = Occupancy()

    def in_system(self) -> float:
        """Requests in this replica, on average since the last call (``Occupancy``)."""
        return self.occupancy.read(self.lag.lag_s)

    def admit(self, priority: Priority, received: float | None = None) -> Ticket:
        """A place for one request of ``priority``; raises OverloadedError when it is shed.

        ``Ticket.admitted`` is False for a request that gets its fallback instead
        of the model (normal or critical work past its bounds). ``received``: when
        the edge received it (the occupancy counts its time from then).
        """
        self.lag.ensure_running()
        admitted = self._room_for(priority)
        if not admitted and priority == "best_effort":
            raise OverloadedError(
                "best-effort work is shed while this replica is behind; retry shortly",
                retry_after_s=self.bounds.retry_after_s,
            )
        self.in_flight[priority] += 1
        return Ticket(self, priority, admitted, received)

    def _room_for(self, priority: Priority) -> bool:
        bounds = self.bounds
        total = sum(self.in_flight.values())
        if priority == "critical":
            return total < bounds.max_in_flight
        if priority == "normal":
            # A standing backlog only: one stall (the OS, a GC) does not shed normal work.
            return total < bounds.max_in_flight * bounds.normal_share and (
                self.lag.lag_s * 1000 < bounds.normal_lag_ms
            )
        return total < bounds.max_in_flight * bounds.best_effort_share and (
            self.lag.now_s() * 1000 < bounds.best_effort_lag_ms
        )


# A request's terms and its place in its class, settled before any body is read: the
# gate lowers an X-Priority above the caller's ceiling, refuses a request whose budget
# was spent before this replica read it (UseLocalError) and one whose class is shed
# (OverloadedError); each is counted and sent to the plane's listeners as Shed.
class Gate:
    def __init__(self, admission: Admission, counters: GameTimeCounters, events: Events) -> None:
        self.admission = admission
        self.counters = counters
        self.events = events

    def admit(
        self,
        name: str,
        timing: FamilyTiming,
        protocol: Protocol,
        received: float,
        deadline_ms: float | None,
        priority: str | None,
        ceiling: Priority | None,
    ) -> tuple[Call, Ticket]:
        """``received``: when the edge received it; ``ceiling``: the highest class the
        caller's key may ask for (None: the family's own)."""
        counts = self.counters.family(name)
        chosen = parse_priority(priority, timing.priority)
        allowed = ceiling or timing.priority
        if outranks(chosen, allowed):
            chosen = allowed
            counts.priority_lowered += 1
        call = timing.call(protocol, received, deadline_ms, chosen)
        if call.deadline.remaining_s() <= 0:
            counts.spent_on_arrival += 1
            self.events.emit(Shed(name, UseLocalError.code, received))
            raise UseLocalError(
                f"{name}: the {call.deadline.budget_ms:g} ms deadline was spent before the "
                "model could be asked (queued at the edge or in this replica); decide locally",
                retry_after_s=self.admission.bounds.retry_after_s,
            )
        try:
            ticket = self.admission.admit(chosen, received)
        except OverloadedError as exc:
            counts.shed[chosen] += 1
            self.events.emit(Shed(name, exc.code, received))
            raise
        call.admitted = ticket.admitted
        return call, ticket
