"""Canary routing: which version answers a request during a rollout, and how it is judged.

A route sends a cohort of callers (by routing key) to the challenger and
mirrors a share of the rest. A challenger's answer is served only if it is
sound, with the champion's computed alongside as fallback and as the
reference its behaviour is measured against; every outcome lands in the
rollout window the controller judges.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping

import numpy as np

from models.errors import DeadlineExceededError, GameserveError, InvalidOutputError, OverloadedError
from models.family import AnyFamily
from serving.dataplane.backend import Backend, Prediction
from serving.dataplane.game_time import Deadline
from serving.dataplane.rollout_metrics import MetricsWindows, VersionWindow
from serving.dataplane.routing import CHALLENGER_ROLE, Route, choose

logger = logging.getLogger(__name__)


class Canary:
    """Champion and challenger backends of every family, and the rollout routes between them."""

    def __init__(self, backends: Mapping[str, Backend], challengers: Mapping[str, Backend]) -> None:
        self.backends = backends
        self.challengers = dict(challengers)
        self.routes: dict[str, Route] = {}
        self.metrics = MetricsWindows()
        self._rng = random.Random()
        self._shadow_tasks: set[asyncio.Task[None]] = set()

    def set_routes(self, routes: Mapping[str, Route]) -> None:
        """Replace the rollout routes; families not named go back to champion only."""
        self.routes = {n: r for n, r in routes.items() if n in self.challengers}

    def challenger_version(self, name: str) -> str | None:
        route = self.routes.get(name)
        return None if route is None else route.challenger_version

    async def serve(
        self,
        family: AnyFamily,
        tensors: dict[str, np.ndarray],
        routing_key: str | None,
        deadline: Deadline | None = None,
    ) -> Prediction:
        """The answer for one caller: the champion's, or its cohort's version's."""
        route = self.routes.get(family.name)
        if route is None:
            prediction = await self.backends[family.name].predict(tensors, deadline)
            check_outputs(family, prediction)
            return prediction
        role, mirror = choose(route, routing_key, self._rng)
        if role == CHALLENGER_ROLE:
            return await self._challenger_with_fallback(family, tensors, deadline)
        prediction = await self._timed_champion(family, tensors, deadline)
        if mirror:
            task = asyncio.create_task(self._shadow(family, tensors, prediction))
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)
        return prediction

    async def explicit_challenger(
        self, family: AnyFamily, tensors: dict[str, np.ndarray], deadline: Deadline | None = None
    ) -> Prediction:
        prediction = await self.challengers[family.name].predict(tensors, deadline)
        check_outputs(family, prediction)
        return prediction

    async def _timed_champion(
        self, family: AnyFamily, tensors: dict[str, np.ndarray], deadline: Deadline | None
    ) -> Prediction:
        window = self.metrics.family(family.name).champion
        started = time.perf_counter()
        try:
            prediction = await self.backends[family.name].predict(tensors, deadline)
            check_outputs(family, prediction)
        except DeadlineExceededError:
            raise  # the caller's deadline, not the version's fault: not an error of it
        except GameserveError:
            window.record("", None, error=True)
            raise
        window.record(prediction.version, (time.perf_counter() - started) * 1000)
        return prediction

    async def _challenger_with_fallback(
        self, family: AnyFamily, tensors: dict[str, np.ndarray], deadline: Deadline | None
    ) -> Prediction:
        """Serve the challenger's answer only if it is sound; the champion's otherwise.

        Both run at once on the same inputs: the champion's answer is the
        fallback and the reference the challenger's behaviour is judged by.
        """
        champion = asyncio.create_task(self._timed_champion(family, tensors, deadline))
        try:
            challenger = await self._try_challenger(family, tensors, deadline)
        except OverloadedError:
            logger.warning("%s challenger is saturated", family.name)
            challenger = None
        reference = await champion
        sound = self._record_challenger(family, challenger, reference)
        if challenger is not None and sound:
            return challenger[0]
        return reference

    async def _shadow(
        self, family: AnyFamily, tensors: dict[str, np.ndarray], reference: Prediction
    ) -> None:
        try:
            challenger = await self._try_challenger(family, tensors, None)
        except OverloadedError:
            return  # mirroring is best effort: a busy challenger skips a copy, nobody waits
        self._record_challenger(family, challenger, reference)

    async def _try_challenger(
        self, family: AnyFamily, tensors: dict[str, np.ndarray], deadline: Deadline | None
    ) -> tuple[Prediction, float] | None:
        """The challenger's answer and latency; None if it failed or missed the
        deadline (a slow version is what the canary exists to catch). A busy
        challenger's refusal (OverloadedError) is the caller's to weigh."""
        started = time.perf_counter()
        try:
            prediction = await self.challengers[family.name].predict(tensors, deadline)
        except OverloadedError:
            raise
        except Exception as exc:  # any failure counts against the challenger, never the client
            logger.warning("%s challenger failed: %s", family.name, exc)
            return None
        return prediction, (time.perf_counter() - started) * 1000

    def _record_challenger(
        self,
        family: AnyFamily,
        challenger: tuple[Prediction, float] | None,
        reference: Prediction,
    ) -> bool:
        """Record one challenger outcome; True when its answer may be served."""
        window: VersionWindow = self.metrics.family(family.name).challenger
        route = self.routes.get(family.name)
        version = route.challenger_version if route else ""
        if challenger is None:
            window.record(version, None, error=True)
            return False
        prediction, latency_ms = challenger
        invalid = bool(family.invalid_rows(prediction.outputs).any())
        divergence = None
        if not invalid:
            divergence = float(np.mean(family.divergence(reference.outputs, prediction.outputs)))
        window.record(prediction.version, latency_ms, invalid=invalid, divergence=divergence)
        return not invalid


def check_outputs(family: AnyFamily, prediction: Prediction) -> None:
    """A model that emits NaN or broken outputs fails loudly, never reaches a game server."""
    if family.invalid_rows(prediction.outputs).any():
        raise InvalidOutputError(
            f"{family.name} v{prediction.version}: outputs are missing, not finite or "
            "outside their range"
        )
