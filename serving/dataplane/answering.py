"""The model's answer within a call's terms, or the fallback's, or the miss's error.

What may stand in when the model cannot be afforded or fails: the player's
recent answer (``answer_cache.py``, families with a ``cache_ttl_s``), then
the family's fallback, unless the call asked for the error instead. Every
miss is counted by reason (``game_time.FamilyCounts``) and sent to the
plane's listeners as ``Missed``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from models.errors import (
    DeadlineExceededError,
    InvalidInputError,
    InvalidOutputError,
    ModelNotFoundError,
    OverloadedError,
)
from models.family import AnyFamily
from serving.dataplane.admission import Admission
from serving.dataplane.answer_cache import AnswerCache
from serving.dataplane.backend import Backend, Prediction
from serving.dataplane.canary import Canary, check_outputs
from serving.dataplane.events import Events, Missed
from serving.dataplane.game_time import (
    Answer,
    Call,
    Deadline,
    FallbackReason,
    FamilyTiming,
    GameTimeCounters,
)


class Answering:
    def __init__(
        self,
        backends: Mapping[str, Backend],
        canary: Canary,
        counters: GameTimeCounters,
        events: Events,
        admission: Admission,
    ) -> None:
        self.backends = backends
        self.canary = canary
        self.counters = counters
        self.events = events
        self.admission = admission  # its bounds are read per miss: they may be replaced
        # The model's recent answers per player, for families with a cache_ttl_s.
        self.answers = AnswerCache()

    async def answer(
        self,
        family: AnyFamily,
        timing: FamilyTiming,
        tensors: dict[str, np.ndarray],
        version: str | None,
        routing_key: str | None,
        call: Call,
        row_keys: Sequence[str] | None,
    ) -> Answer:
        name = family.name
        if not timing.cache_ttl_s:
            row_keys = None  # the family keeps no answers: none stored, none looked up
        if not call.admitted:
            return self._miss(family, timing, tensors, call, "overload", None, row_keys)
        budget = call.deadline
        model_deadline = Deadline(budget.at - call.reserve_ms / 1000, budget.budget_ms)
        if model_deadline.expired():  # no time left for the model: not started, counted
            self.counters.family(name).expired += 1
            return self._miss(family, timing, tensors, call, "deadline", None, row_keys)
        try:
            prediction = await self._dispatch(family, tensors, version, routing_key, model_deadline)
        except (InvalidInputError, ModelNotFoundError):
            raise  # the caller's mistake: no fallback stands in for it
        except DeadlineExceededError as exc:
            return self._miss(family, timing, tensors, call, "deadline", exc, row_keys)
        except OverloadedError as exc:
            return self._miss(family, timing, tensors, call, "overload", exc, row_keys)
        except InvalidOutputError as exc:
            return self._miss(family, timing, tensors, call, "invalid_output", exc)
        except Exception as exc:  # a model, a replica or Ray failing: the game still gets an answer
            return self._miss(family, timing, tensors, call, "error", exc)
        if call.deadline.expired():
            self.counters.family(name).late += 1
        challenger = self.canary.challenger_version(name)
        by_challenger = challenger is not None and prediction.version == challenger
        if row_keys and version is None:  # a pinned version is not the player's
            self.answers.put(name, prediction.version, row_keys, prediction.outputs)
        return Answer(prediction.outputs, prediction.version, challenger=by_challenger)

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

    async def _explicit_champion(
        self, family: AnyFamily, tensors: dict[str, np.ndarray], version: str, deadline: Deadline
    ) -> Prediction:
        """A request naming the champion's version: no routing, and no status call per request."""
        backend = self.backends[family.name]
        if backend.version is not None and backend.version != version:
            raise not_serving(family.name, version, backend.version)
        prediction = await backend.predict(tensors, deadline)
        if prediction.version != version:  # it moved while this request waited
            raise not_serving(family.name, version, prediction.version)
        check_outputs(family, prediction)
        return prediction

    def _miss(
        self,
        family: AnyFamily,
        timing: FamilyTiming,
        tensors: dict[str, np.ndarray],
        call: Call,
        reason: FallbackReason,
        error: Exception | None,
        row_keys: Sequence[str] | None = None,
    ) -> Answer:
        """The fallback's answer, or the error the caller asked for instead. Where the
        model could not be afforded (deadline, overload) and ``row_keys`` are given, the
        player's recent answer comes first."""
        counts = self.counters.family(family.name)
        self.events.emit(Missed(family.name, reason, error))
        if row_keys and reason in ("deadline", "overload") and call.on_miss == "fallback":
            cached = self.answers.get(family.name, row_keys, timing.cache_ttl_s)
            if cached is not None:
                counts.fallbacks["cached"] += 1
                return Answer(cached[1], cached[0], "fallback", "cached")
        if call.on_miss == "fallback" and family.fallback_policy is not None:
            counts.fallbacks[reason] += 1
            return Answer(family.fallback_outputs(tensors), None, "fallback", reason)
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


def not_serving(name: str, version: str, serving: str | None) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"model {name!r} version {version!r} is not serving (serving: {serving})"
    )
