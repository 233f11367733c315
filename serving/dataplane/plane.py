"""The data plane: every route's way to a model, whatever protocol it speaks.

A request is admitted by its class before its body is read (``admission.py``),
its tensors are checked against the family's contract and bounded, and it
is answered within its deadline by the model version routing picks, or by
what stands in for it (``answering.py``). Metrics, the payload log and the
failure log subscribe to what happens (``events.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

import numpy as np

from models import get_family
from models.errors import InvalidInputError, ModelNotFoundError
from models.family import AnyFamily
from serving.dataplane.admission import Admission, Gate, Ticket
from serving.dataplane.answering import Answering
from serving.dataplane.backend import Backend, ModelStatus
from serving.dataplane.batching import rows
from serving.dataplane.canary import Canary
from serving.dataplane.events import Answered, Events, FailureLog, Listener
from serving.dataplane.game_time import (
    Answer,
    Call,
    FamilyCounts,
    FamilyTiming,
    GameTimeCounters,
    Priority,
    Protocol,
)
from serving.dataplane.telemetry import Observation, Telemetry

ShippedCounts = Callable[[], Awaitable[dict[str, FamilyCounts]]]


class DataPlane:
    """Admission, contract checks, bounds and answers, shared by every route."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        max_rows_per_request: int,
        challengers: Mapping[str, Backend] | None = None,
        *,
        timing: Callable[[str], FamilyTiming] | None = None,
        admission: Admission | None = None,
        counters: GameTimeCounters | None = None,
        shipped_counts: ShippedCounts | None = None,
        listeners: Iterable[Listener] = (),
    ) -> None:
        self.backends = dict(backends)
        self.max_rows_per_request = max_rows_per_request
        self.canary = Canary(self.backends, challengers or {})
        self.admission = admission or Admission()
        self.counters = counters or GameTimeCounters()
        self.telemetry = Telemetry()
        self.events = Events([self.telemetry.listen, FailureLog().listen, *listeners])
        self.gate = Gate(self.admission, self.counters, self.events)
        self.answering = Answering(
            self.backends, self.canary, self.counters, self.events, self.admission
        )
        self._timing_of = timing or _declared_timing
        # Resolved once per family, not per request: every request reads both.
        self._families: dict[str, AnyFamily] = {}
        self._timings: dict[str, FamilyTiming] = {}
        self.shipped_counts = shipped_counts  # totals replicas shipped to the collector

    def family(self, name: str) -> AnyFamily:
        family = self._families.get(name)
        if family is None:
            if name not in self.backends:
                raise ModelNotFoundError(f"model {name!r} is not served here")
            family = self._families[name] = get_family(name)
        return family

    def timing(self, name: str) -> FamilyTiming:
        """``name``'s game-time terms (deadline, class, what a miss gets)."""
        timing = self._timings.get(name)
        if timing is None:
            timing = self._timings[name] = self._timing_of(name)
        return timing

    def admit(
        self,
        name: str,
        protocol: Protocol,
        *,
        received: float,
        deadline_ms: float | None = None,
        priority: str | None = None,
        ceiling: Priority | None = None,
    ) -> tuple[Call, Ticket]:
        """A request's terms and its admission ticket (``admission.Gate.admit``)."""
        self.family(name)
        timing = self.timing(name)
        return self.gate.admit(name, timing, protocol, received, deadline_ms, priority, ceiling)

    def observe(self, name: str, received: float) -> Observation:
        """Measure one request of ``name`` from ``received`` (see serving.dataplane.telemetry)."""
        return Observation(self.telemetry, name, received)

    async def infer(
        self,
        name: str,
        inputs: Mapping[str, np.ndarray],
        version: str | None = None,
        field: str | None = None,
        routing_key: str | None = None,
        call: Call | None = None,
        row_keys: Sequence[str] | None = None,
    ) -> Answer:
        """Named input tensors through the family's model, within ``call``'s terms (the
        family's defaults without one). ``field`` names the batch in errors;
        ``routing_key`` keeps one caller on one version during a rollout; ``row_keys``
        (one per row) let a player's recent answer stand in when the model cannot."""
        family = self.family(name)
        tensors = family.contract.validate_inputs(inputs)
        count = rows(tensors)
        if count > self.max_rows_per_request:
            where = field or family.contract.inputs[0].name
            limit = self.max_rows_per_request
            raise InvalidInputError(
                f"{where}: {count} entries exceed the limit of {limit} per request"
            )
        timing = self.timing(name)
        call = call or timing.call("game")
        keys = row_keys if row_keys is not None and len(row_keys) == count else None
        answer = await self.answering.answer(
            family, timing, tensors, version, routing_key, call, keys
        )
        self.events.emit(Answered(name, call, tensors, answer, routing_key))
        return answer

    async def status(self, name: str) -> ModelStatus:
        self.family(name)
        return await self.backends[name].status()


def _declared_timing(name: str) -> FamilyTiming:
    """A family's terms from its own declaration, where no settings are given (tools, tests)."""
    from serving.settings import ServingSettings

    return ServingSettings().timing(name)
