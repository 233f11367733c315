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
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from models.errors import OverloadedError
from serving.dataplane.backend import ModelStatus, Prediction, Replicas
from serving.dataplane.batching import rows
from serving.dataplane.model_slot import ModelSlot


class ColocatedBackend:
    """A data-plane backend over a ``ModelSlot`` in this process."""

    def __init__(
        self,
        slot: ModelSlot,
        replicas: Callable[[], Awaitable[Replicas]],
        threads: int = 2,
        inline: bool = True,
        max_in_flight: int | None = None,
    ) -> None:
        self.slot = slot
        self.inline = inline
        self._replicas = replicas
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"{slot.family.name}-onnx")
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self.requests = 0
        self.rows = 0

    @property
    def version(self) -> str | None:
        return self.slot.version

    async def predict(self, inputs: dict[str, np.ndarray]) -> Prediction:
        model, version = self.slot.current()
        if self.inline:
            outputs = model.run_validated(inputs)
        else:
            if self._max_in_flight is not None and self._in_flight >= self._max_in_flight:
                raise OverloadedError(
                    f"{self.slot.family.name} v{version}: {self._in_flight} calls in flight"
                )
            self._in_flight += 1
            try:
                loop = asyncio.get_running_loop()
                outputs = await loop.run_in_executor(self._pool, model.run_validated, inputs)
            finally:
                self._in_flight -= 1
        self.requests += 1
        self.rows += rows(inputs)
        return Prediction(outputs, version)

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
        }
