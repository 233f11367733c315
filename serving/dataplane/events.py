"""What happens to requests in the data plane, as a small stream of events.

Cross-cutting concerns subscribe instead of being wired into the request
path: the metrics (``Telemetry.listen``), the payload log
(``PayloadLog.listen``) and the failure log below each take the events they
need. A listener runs on the request's own loop and must not block: it
counts, samples or hands off (the payload log writes on a thread of its own).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from models.errors import GameserveError
from serving.dataplane.game_time import Answer, Call, FallbackReason

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shed:
    """Refused before any model was asked: its class shed, or its budget spent on arrival."""

    family: str
    code: str  # the refusal's stable error code
    received: float  # time.monotonic() at the edge


@dataclass(frozen=True)
class Answered:
    """Answered within its terms, by a model version or by the fallback."""

    family: str
    call: Call
    tensors: dict[str, np.ndarray]
    answer: Answer
    routing_key: str | None


@dataclass(frozen=True)
class Missed:
    """The model could not answer; the fallback stands in, or the caller gets the error."""

    family: str
    reason: FallbackReason
    error: Exception | None


Event = Shed | Answered | Missed
Listener = Callable[[Event], None]


class Events:
    """The plane's listeners, each given every event in the order they subscribed."""

    def __init__(self, listeners: Iterable[Listener] = ()) -> None:
        self.listeners = list(listeners)

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)


class FailureLog:
    """A failing model is an operator's problem even when a fallback hides it from players:
    logged with its traceback, at most once per ``every_s`` per family and reason (a
    broken model fails every request; the counters say how many)."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self._logged: dict[tuple[str, str], float] = {}

    def listen(self, event: Event) -> None:
        if not isinstance(event, Missed) or event.reason not in ("error", "invalid_output"):
            return
        now = time.monotonic()
        key = (event.family, event.reason)
        if now - self._logged.get(key, float("-inf")) < self.every_s:
            return
        self._logged[key] = now
        error = event.error
        message = error.message if isinstance(error, GameserveError) else repr(error)
        logger.error(
            "%s %s, the fallback answers: %s", event.family, event.reason, message, exc_info=error
        )
