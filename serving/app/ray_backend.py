"""A data-plane backend that calls a family deployment through its Ray handle."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from models.errors import GameserveError, OverloadedError
from serving.dataplane.backend import ModelStatus, Prediction, Replicas, within
from serving.dataplane.game_time import Deadline

logger = logging.getLogger(__name__)


def _our_error(exc: BaseException) -> GameserveError | None:
    """The GameserveError a Ray error wraps, if any (Ray wraps replica errors)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, GameserveError) and type(seen).__module__ == "models.errors":
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    return None


class RayBackend:
    def __init__(
        self,
        family: str,
        handle: DeploymentHandle[Any],
        watch: ReplicaWatch,
        retry_after_s: float,
    ) -> None:
        self.family = family
        self.handle = handle
        self.watch = watch
        self.retry_after_s = retry_after_s

    @property
    def version(self) -> str | None:
        # Its replicas swap versions on their own: a remembered one could be stale,
        # so a request naming a version is checked against the prediction instead.
        return None

    async def predict(
        self, inputs: dict[str, np.ndarray], deadline: Deadline | None = None
    ) -> Prediction:
        # The replica drops the request unrun if it reaches a batch after its
        # deadline; waiting here ends at the deadline and cancels the call.
        wall_deadline = None if deadline is None else deadline.wall_at()
        try:
            prediction: Prediction = await within(self._call(inputs, wall_deadline), deadline)
        except BackPressureError as exc:
            raise OverloadedError(
                f"model {self.family!r} is at capacity; retry shortly", self.retry_after_s
            ) from exc
        except Exception as exc:
            ours = _our_error(exc)
            if ours is None:
                raise
            raise ours from None
        return prediction

    async def _call(self, inputs: dict[str, np.ndarray], wall_deadline: float | None) -> Prediction:
        response = self.handle.predict.remote(inputs, wall_deadline)
        try:
            prediction: Prediction = await response
        except asyncio.CancelledError:  # the deadline: the replica need not run it
            response.cancel()  # type: ignore[no-untyped-call]
            raise
        return prediction

    async def status(self) -> ModelStatus:
        stats = await self.stats()
        replicas = await self.watch.replicas(self.family)
        return ModelStatus(
            family=self.family,
            version=stats["version"],
            ready=stats["version"] is not None,
            replicas=replicas.running,
            device=stats["device"],
            problem=replicas.problem,
        )

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.handle.stats.remote()
        return result


class ReplicaWatch:
    """Serve's view of one application's replicas, read off the event loop.

    ``serve.status()`` is a blocking call to the controller: made on a replica's
    event loop it would hold up every request behind it. Status routes (model
    lists, readiness probes) ask this instead; it reads Serve's status on a
    thread, at most once per ``max_age_s``, and every caller meanwhile shares
    the last view. Requests that run a model never ask.
    """

    def __init__(self, app_name: str, max_age_s: float = 1.0) -> None:
        self.app_name = app_name
        self.max_age_s = max_age_s
        self._seen: dict[str, Replicas] = {}
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()
        self._failing = False

    async def replicas(self, deployment: str) -> Replicas:
        if time.monotonic() - self._read_at > self.max_age_s:
            async with self._lock:  # one read at a time; the others then find it fresh
                if time.monotonic() - self._read_at > self.max_age_s:
                    await self._refresh()
        return self._seen.get(deployment, Replicas(0, None))

    async def _refresh(self) -> None:
        try:
            self._seen = await asyncio.to_thread(self._read)
            self._failing = False
        except Exception:  # the controller restarting: keep the last view, say so once
            if not self._failing:
                logger.warning("replica status unavailable; keeping the last view", exc_info=True)
            self._failing = True
        self._read_at = time.monotonic()

    def _read(self) -> dict[str, Replicas]:
        app = serve.status().applications.get(self.app_name)
        deployments = {} if app is None else app.deployments
        return {name: _replicas(status) for name, status in deployments.items()}


# Serve's own words, in its status message, for a replica whose constructor or
# first health check failed; it retries such a replica for as long as it takes.
_START_FAILED = "failed to start"
_FAILED_STATES = ("UNHEALTHY", "DEPLOY_FAILED")


def _replicas(status: Any) -> Replicas:
    """A surviving replica keeps answering while its replacement crash-loops, so
    "it answers" alone would hide the loop; the problem says what Serve saw."""
    running = not_running = 0
    for state, count in status.replica_states.items():
        if str(state).endswith("RUNNING"):
            running += count
        else:
            not_running += count
    failing = str(status.status).rsplit(".", 1)[-1] in _FAILED_STATES or (
        not_running > 0 and _START_FAILED in status.message
    )
    return Replicas(running, _condensed(status.message) if failing else None)


def _condensed(message: str) -> str | None:
    """Serve's message without the traceback it carries: its first line and the error."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return None
    if len(lines) == 1:
        return lines[0]
    return f"{lines[0].removesuffix('Error:').strip()} {lines[-1]}"
