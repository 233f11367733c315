"""Families served inside the ingress replica: the hot path with no Ray hop.

The NPC model answers in tens of microseconds; a call from the ingress to a
family deployment costs milliseconds (a Ray actor call each way, on a busy
host). So a CPU family runs in the ingress replica's own process by default,
and scales with the ingress. Families on GPUs, or with their own queue-driven
autoscaling, keep their deployment (``FamilyServing.placement``).

Outside a rollout the champion runs on the event loop itself: one small ONNX
Runtime call is cheaper than a hop to a thread. During a rollout both versions
run on worker threads, each version on its own pool: a slow challenger (what
the canary exists to catch) then never stalls the loop nor queues ahead of the
champion, and both are timed the same way, so the latency gate compares
models, not placements. A challenger also has a bound on calls in flight: past
it, a call is refused at once instead of queueing behind a slow version (whose
backlog would otherwise outlive its rollout).

A call on the loop cannot be interrupted, so it is made there only while the
version's calls are quick (``INLINE_MAX_S``, a running average): a slow model
goes to the threads, where its request's deadline bounds the wait and work
whose deadline passed in the pool's queue is dropped before it runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from models.errors import DeadlineExceededError, OverloadedError
from models.runtime import OnnxModel
from serving.dataplane.backend import ModelStatus, Prediction, Replicas, within
from serving.dataplane.batching import rows
from serving.dataplane.game_time import Deadline, GameTimeCounters, not_started
from serving.dataplane.model_slot import ModelSlot

# A call longer than this on average leaves the event loop (see the docstring):
# at the NPC model's tens of microseconds, inline wins; at milliseconds, one
# call would hold every other request of the replica past its deadline.
INLINE_MAX_S = 0.002
_AVERAGE_WEIGHT = 0.1


class _Job:
    """One call sent to the pool: whether it ran, or was dropped unrun (counted once)."""

    __slots__ = ("dropped", "started")

    def __init__(self) -> None:
        self.started = False
        self.dropped = False


class ColocatedBackend:
    """A data-plane backend over a ``ModelSlot`` in this process."""

    def __init__(
        self,
        slot: ModelSlot,
        replicas: Callable[[], Awaitable[Replicas]],
        threads: int = 2,
        inline: bool = True,
        max_in_flight: int | None = None,
        counters: GameTimeCounters | None = None,
    ) -> None:
        self.slot = slot
        self.counters = counters or GameTimeCounters()
        self._count_lock = threading.Lock()  # pool threads drop expired work too
        self.inline = inline
        self._replicas = replicas
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"{slot.family.name}-onnx")
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._call_s = 0.0  # running average of one call, this version
        self._timed_version: str | None = None
        self.requests = 0
        self.rows = 0
        self.expired = 0

    @property
    def version(self) -> str | None:
        return self.slot.version

    async def predict(
        self, inputs: dict[str, np.ndarray], deadline: Deadline | None = None
    ) -> Prediction:
        model, version = self.slot.current()
        if version != self._timed_version:  # a new version earns its place on the loop anew
            self._timed_version, self._call_s = version, 0.0
        if self.inline and self._call_s < INLINE_MAX_S:
            if deadline is not None and deadline.expired():
                raise self._expired()
            outputs = self._timed(model, inputs, None)
        else:
            if self._max_in_flight is not None and self._in_flight >= self._max_in_flight:
                raise OverloadedError(
                    f"{self.slot.family.name} v{version}: {self._in_flight} calls in flight"
                )
            self._in_flight += 1
            job = _Job()
            try:
                loop = asyncio.get_running_loop()
                work = loop.run_in_executor(self._pool, self._timed, model, inputs, deadline, job)
                outputs = await within(work, deadline)
            except DeadlineExceededError:
                with self._count_lock:  # cancelled in the pool's queue: it never runs
                    if not job.started and not job.dropped:
                        job.dropped = True
                        self._count_expired()
                raise
            finally:
                self._in_flight -= 1
        self.requests += 1
        self.rows += rows(inputs)
        return Prediction(outputs, version)

    def _timed(
        self,
        model: OnnxModel,
        inputs: dict[str, np.ndarray],
        deadline: Deadline | None,
        job: _Job | None = None,
    ) -> dict[str, np.ndarray]:
        if job is not None:
            with self._count_lock:
                if job.dropped:  # its caller gave up first
                    raise not_started()
                if deadline is not None and deadline.expired():  # it waited in the pool's queue
                    job.dropped = True
                    self._count_expired()
                    raise not_started()
                job.started = True
        started = time.perf_counter()
        outputs = model.run_validated(inputs)
        took = time.perf_counter() - started
        self._call_s += (took - self._call_s) * _AVERAGE_WEIGHT
        return outputs

    def _expired(self) -> DeadlineExceededError:
        with self._count_lock:
            self._count_expired()
        return not_started()

    def _count_expired(self) -> None:
        self.expired += 1
        self.counters.family(self.slot.family.name).expired += 1

    async def status(self) -> ModelStatus:
        version = self.slot.version
        replicas = await self._replicas()
        return ModelStatus(
            family=self.slot.family.name,
            version=version,
            ready=version is not None,
            replicas=replicas.running if version is not None else 0,
            device=self.slot.device,
            problem=replicas.problem,
        )

    def stats(self) -> dict[str, object]:
        """The same counters a family replica reports; one model call per request."""
        return {
            **self.slot.describe(),
            "requests": self.requests,
            "model_calls": self.requests,
            "rows": self.rows,
            "expired": self.expired,
        }
