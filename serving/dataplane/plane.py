"""The data plane: every route's way to a model, whatever protocol it speaks.

Routes translate HTTP; the data plane admits the request by its priority
class (``serving.dataplane.admission``), validates tensors against the family
contract, bounds the request, dispatches it within its deadline
(``serving.dataplane.canary`` decides which version answers during a rollout),
checks what comes back, and answers with the family's fallback when the model
cannot (``serving.dataplane.game_time``). Backends are in ``serving.dataplane.backend``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from models import get_family
from models.errors import (
    DeadlineExceededError,
    GameserveError,
    InvalidInputError,
    InvalidOutputError,
    ModelNotFoundError,
    OverloadedError,
    UseLocalError,
)
from models.family import AnyFamily
from serving.dataplane.admission import Admission, Ticket
from serving.dataplane.answer_cache import AnswerCache
from serving.dataplane.backend import Backend, ModelStatus, Prediction
from serving.dataplane.batching import rows
from serving.dataplane.canary import Canary, check_outputs
from serving.dataplane.game_time import (
    Answer,
    Call,
    Deadline,
    FallbackReason,
    FamilyCounts,
    FamilyTiming,
    GameTimeCounters,
    Priority,
    Protocol,
    outranks,
    parse_priority,
)
from serving.dataplane.payload_files import Record
from serving.dataplane.payload_log import PayloadLog, new_request_id
from serving.dataplane.rollout_metrics import MetricsWindows
from serving.dataplane.routing import Route
from serving.dataplane.telemetry import Observation, Telemetry

logger = logging.getLogger(__name__)


class DataPlane:
    """Validation, bounds, routing and output checks shared by every route."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        max_rows_per_request: int,
        challengers: Mapping[str, Backend] | None = None,
        timing: Callable[[str], FamilyTiming] | None = None,
        admission: Admission | None = None,
        counters: GameTimeCounters | None = None,
        shipped_counts: Callable[[], Awaitable[dict[str, FamilyCounts]]] | None = None,
        telemetry: Telemetry | None = None,
        payloads: PayloadLog | None = None,
    ) -> None:
        self.backends = dict(backends)
        self.max_rows_per_request = max_rows_per_request
        self.canary = Canary(self.backends, challengers or {})
        self._timing_of = timing or _declared_timing
        # Resolved once per family: admission reads them on every request.
        self._timings: dict[str, FamilyTiming] = {}
        self.admission = admission or Admission()
        self.counters = counters or GameTimeCounters()
        self.telemetry = telemetry if telemetry is not None else Telemetry()
        # A sampled share of answered requests goes to Parquet, off the request path.
        self.payloads = payloads
        self._logged: dict[tuple[str, str], float] = {}
        # The model's recent answers per player, for families with a cache_ttl_s.
        self.answers = AnswerCache()
        # Counts replicas have already shipped elsewhere (the collector, under Ray).
        self._shipped_counts = shipped_counts

    @property
    def metrics(self) -> MetricsWindows:
        """What each version did in the current rollout windows (flushed to the collector)."""
        return self.canary.metrics

    def family(self, name: str) -> AnyFamily:
        if name not in self.backends:
            raise ModelNotFoundError(f"model {name!r} is not served here")
        return get_family(name)

    def timing(self, name: str) -> FamilyTiming:
        """``name``'s game-time terms (deadline, class, what a miss gets)."""
        timing = self._timings.get(name)
        if timing is None:
            timing = self._timings[name] = self._timing_of(name)
        return timing

    def set_routes(self, routes: Mapping[str, Route]) -> None:
        """Replace the rollout routes; families not named go back to champion only."""
        self.canary.set_routes(routes)

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
        """A request's game-time terms and its place in its class, before any body is read.

        ``received`` is when the edge received it (``game_time.edge_received``);
        ``ceiling`` the highest class the caller's key may ask for (None: the
        family's own): an ``X-Priority`` above it is lowered to it and counted.
        Raises UseLocalError when the budget was spent before this replica read
        the request, OverloadedError when its class is shed (both counted).
        """
        self.family(name)
        timing = self.timing(name)
        counts = self.counters.family(name)
        chosen = parse_priority(priority, timing.priority)
        allowed = ceiling or timing.priority
        if outranks(chosen, allowed):
            chosen = allowed
            counts.priority_lowered += 1
        call = timing.call(protocol, received, deadline_ms, chosen)
        left_ms = call.deadline.remaining_s() * 1000
        if left_ms <= 0:
            counts.spent_on_arrival += 1
            self.telemetry.record(
                name, None, "none", UseLocalError.code, time.monotonic() - received, 0
            )
            raise UseLocalError(
                f"{name}: the {call.deadline.budget_ms:g} ms deadline was spent before the "
                "model could be asked (queued at the edge or in this replica); decide locally",
                retry_after_s=self.admission.bounds.retry_after_s,
            )
        try:
            ticket = self.admission.admit(chosen, received)
        except OverloadedError as exc:
            counts.shed[chosen] += 1
            self.telemetry.record(name, None, "none", exc.code, time.monotonic() - received, 0)
            raise
        call.admitted = ticket.admitted
        return call, ticket

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
        """Run named input tensors through the family's serving model, within ``call``'s terms.

        ``field`` names the batch in errors; ``routing_key`` (a session or
        player id) keeps one caller on one version during a rollout. Without a
        ``call`` the family's defaults apply, as on the game API. ``row_keys``
        (one per row, the route's ``row_keys``) let a recent answer stand in
        when the model cannot be afforded (serving/dataplane/answer_cache.py).
        """
        family = self.family(name)
        tensors = family.contract.validate_inputs(inputs)
        count = rows(tensors)
        if count > self.max_rows_per_request:
            field = field or family.contract.inputs[0].name
            raise InvalidInputError(
                f"{field}: {count} entries exceed the limit of {self.max_rows_per_request} "
                "per request"
            )
        if call is None:
            call = self.timing(name).call("game")
        keys = row_keys if row_keys is not None and len(row_keys) == count else None
        answer = await self._answer(family, tensors, version, routing_key, call, keys)
        if self.payloads is not None and self.payloads.wanted(name):
            self._record(name, tensors, answer, call, routing_key)
        return answer

    async def _answer(
        self,
        family: AnyFamily,
        tensors: dict[str, np.ndarray],
        version: str | None,
        routing_key: str | None,
        call: Call,
        row_keys: Sequence[str] | None = None,
    ) -> Answer:
        """The model's answer within ``call``'s terms, or the fallback's (or the miss's error)."""
        name = family.name
        if not self.timing(name).cache_ttl_s:
            row_keys = None  # the family keeps no answers: none stored, none looked up
        if not call.admitted:
            return self._miss(family, tensors, call, "overload", None, row_keys)
        budget = call.deadline
        model_deadline = Deadline(budget.at - call.reserve_ms / 1000, budget.budget_ms)
        if model_deadline.expired():  # no time left for the model: not started, counted
            self.counters.family(name).expired += 1
            return self._miss(family, tensors, call, "deadline", None, row_keys)
        try:
            prediction = await self._dispatch(family, tensors, version, routing_key, model_deadline)
        except (InvalidInputError, ModelNotFoundError):
            raise  # the caller's mistake: no fallback stands in for it
        except DeadlineExceededError as exc:
            return self._miss(family, tensors, call, "deadline", exc, row_keys)
        except OverloadedError as exc:
            return self._miss(family, tensors, call, "overload", exc, row_keys)
        except InvalidOutputError as exc:
            return self._miss(family, tensors, call, "invalid_output", exc)
        except Exception as exc:  # a model, a replica or Ray failing: the game still gets an answer
            return self._miss(family, tensors, call, "error", exc)
        if call.deadline.expired():
            self.counters.family(name).late += 1
        challenger = self.canary.challenger_version(name)
        by_challenger = challenger is not None and prediction.version == challenger
        if row_keys and version is None:  # a pinned version is not the player's
            self.answers.put(name, prediction.version, row_keys, prediction.outputs)
        return Answer(prediction.outputs, prediction.version, challenger=by_challenger)

    def _record(
        self,
        name: str,
        tensors: dict[str, np.ndarray],
        answer: Answer,
        call: Call,
        routing_key: str | None,
    ) -> None:
        assert self.payloads is not None
        record = Record(
            at_s=time.time(),
            request_id=new_request_id(),
            version=answer.version,
            role=answer.role,
            source=answer.source,
            fallback_reason=answer.fallback_reason,
            latency_ms=(time.monotonic() - call.received) * 1000,
            routing_key=routing_key,
            inputs=tensors,
            outputs=answer.outputs,
        )
        self.payloads.offer(name, record)

    async def _dispatch(
        self,
        family: AnyFamily,
        tensors: dict[str, np.ndarray],
        version: str | None,
        routing_key: str | None,
        deadline: Deadline,
    ) -> Prediction:
        if version is None:
            return await self.canary.serve(family, tensors, routing_key, deadline)
        if version == self.canary.challenger_version(family.name):
            return await self.canary.explicit_challenger(family, tensors, deadline)
        return await self._explicit_champion(family, tensors, version, deadline)

    def _miss(
        self,
        family: AnyFamily,
        tensors: dict[str, np.ndarray],
        call: Call,
        reason: FallbackReason,
        error: Exception | None,
        row_keys: Sequence[str] | None = None,
    ) -> Answer:
        """The fallback's answer, or the error the caller asked for instead. Where the
        model could not be afforded (deadline, overload) and ``row_keys`` are given, the
        player's recent answer comes first (serving/dataplane/answer_cache.py)."""
        counts = self.counters.family(family.name)
        if reason in ("error", "invalid_output"):
            self._log_failure(family.name, reason, error)
        if row_keys and reason in ("deadline", "overload") and call.on_miss == "fallback":
            ttl_s = self.timing(family.name).cache_ttl_s
            cached = self.answers.get(family.name, row_keys, ttl_s)
            if cached is not None:
                counts.fallbacks["cached"] += 1
                return Answer(cached[1], cached[0], "fallback", "cached")
        if call.on_miss == "fallback" and family.fallback_policy is not None:
            counts.fallbacks[reason] += 1
            outputs = family.fallback_outputs(tensors)
            return Answer(outputs, None, "fallback", reason)
        counts.missed[reason] += 1
        if reason == "deadline":
            raise DeadlineExceededError(
                f"{family.name}: no answer within the {call.deadline.budget_ms:g} ms deadline"
            )
        if reason == "overload" and error is None:
            raise OverloadedError(
                f"{family.name}: {call.priority} work is over this replica's bound; retry shortly",
                retry_after_s=self.admission.bounds.retry_after_s,
            )
        assert error is not None
        raise error

    def _log_failure(self, name: str, reason: str, error: Exception | None) -> None:
        """A failing model is an operator's problem even when a fallback hides it from
        players: logged with its traceback, at most once a second per family and
        reason (a broken model fails every request; the counts say how many)."""
        now = time.monotonic()
        key = (name, reason)
        if now - self._logged.get(key, float("-inf")) < 1.0:
            return
        self._logged[key] = now
        message = error.message if isinstance(error, GameserveError) else repr(error)
        logger.error("%s %s, the fallback answers: %s", name, reason, message, exc_info=error)

    async def _explicit_champion(
        self, family: AnyFamily, tensors: dict[str, np.ndarray], version: str, deadline: Deadline
    ) -> Prediction:
        """A request naming the champion's version: no routing, and no status call per request."""
        backend = self.backends[family.name]
        if backend.version is not None and backend.version != version:
            raise _not_serving(family.name, version, backend.version)
        prediction = await backend.predict(tensors, deadline)
        if prediction.version != version:  # it moved while this request waited
            raise _not_serving(family.name, version, prediction.version)
        check_outputs(family, prediction)
        return prediction

    async def infer_domain(
        self,
        name: str,
        request: BaseModel,
        routing_key: str | None = None,
        call: Call | None = None,
    ) -> tuple[Any, Answer]:
        """Run a game API request: encode, infer, decode."""
        family = self.family(name)
        route = family.game_route
        if route is None:
            raise ModelNotFoundError(f"model {name!r} has no game route")
        answer = await self.infer(
            name, family.encode(request), field=route.batch_field, routing_key=routing_key,
            call=call, row_keys=route.row_keys(request) if route.row_keys else None,
        )  # fmt: skip
        return family.decode(request, answer.outputs), answer

    async def game_time_counts(self, name: str) -> FamilyCounts:
        """What game time did to ``name``'s requests: shipped totals plus this replica's rest."""
        counts = FamilyCounts()
        if self._shipped_counts is not None:
            shipped = await self._shipped_counts()
            if name in shipped:
                counts.add(shipped[name])
        if name in self.counters.families:
            counts.add(self.counters.families[name])
        return counts

    async def unready(self) -> list[str]:
        """The families meant to serve that cannot answer now: server readiness. A
        family with no champion yet is not meant to serve (its own readiness says so),
        or one new spec file would take every family out of a load balancer's rotation;
        with no family served at all, none is ready."""
        statuses = [await self.status(name) for name in sorted(self.backends)]
        meant = [status for status in statuses if status.version is not None] or statuses
        return [status.family for status in meant if not status.ready]

    async def status(self, name: str) -> ModelStatus:
        self.family(name)
        return await self.backends[name].status()

    async def require_version(self, name: str, version: str) -> ModelStatus:
        status = await self.status(name)
        if status.version != version:
            raise _not_serving(name, version, status.version)
        return status


def _declared_timing(name: str) -> FamilyTiming:
    """A family's terms from its own declaration, where no settings are given (tools, tests)."""
    from serving.settings import ServingSettings

    return ServingSettings().timing(name)


def _not_serving(name: str, version: str, serving: str | None) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"model {name!r} version {version!r} is not serving (serving: {serving})"
    )
