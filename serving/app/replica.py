"""The Ray Serve deployment that runs one family's ONNX model, batched."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import numpy as np
import ray
from ray import serve
from ray.serve import Deployment

from models import get_family
from models.catalog import catalog_of, install_catalog
from models.errors import DeadlineExceededError
from models.spec import FamilySpec
from serving.app.autoscaling import FORECAST_FLOOR_METRIC
from serving.app.collector import collector, flush_forever, follow_floor
from serving.app.config import ReplicaConfig
from serving.app.replica_logging import route_to_serve_log
from serving.dataplane.backend import Prediction
from serving.dataplane.batching import ServiceTime, Work, run_live, work_rows
from serving.dataplane.game_time import GameTimeCounters, not_started
from serving.dataplane.model_slot import ModelSlot
from serving.dataplane.model_source import ModelSource


class FamilyReplica:
    """One replica: an ONNX Runtime session of the version in ``user_config``."""

    def __init__(
        self,
        family: str,
        source: ModelSource,
        intra_op_threads: int = 1,
        family_specs: list[dict[str, Any]] | None = None,
    ) -> None:
        route_to_serve_log()
        install_catalog(catalog_of(FamilySpec.model_validate(s) for s in family_specs or []))
        self._slot = ModelSlot(get_family(family), source, intra_op_threads)
        self._requests = 0
        self._model_calls = 0
        self._expired = 0
        self._service = ServiceTime()
        self._counters = GameTimeCounters()
        self._flusher: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        self._forecast_floor: int | None = None

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Swap the model in place; requests already batched finish on the old one."""
        settings = ReplicaConfig.model_validate(config)
        self._batched.set_max_batch_size(settings.max_batch_rows)  # type: ignore[attr-defined]
        self._batched.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)  # type: ignore[attr-defined]
        if settings.version is not None:
            await self._slot.load(settings.version)
        if self._flusher is None:
            self._flusher = asyncio.create_task(flush_forever(game_time=self._counters))
        if settings.forecast is not None and self._follower is None:
            name, terms = self._slot.family.name, settings.forecast
            await collector().configure_forecast.remote(
                terms.settings, terms.min_replicas, terms.max_replicas, name
            )
            self._follower = asyncio.create_task(follow_floor(name, self._floor_heard))

    def _floor_heard(self, floor: int | None) -> None:
        self._forecast_floor = floor

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve calls it for the queue-depth policy: the forecast's floor, if any."""
        if self._forecast_floor is None:
            return {}
        return {FORECAST_FLOOR_METRIC: float(self._forecast_floor)}

    async def predict(
        self, inputs: dict[str, np.ndarray], wall_deadline: float | None = None
    ) -> Prediction:
        """One request's outputs; DeadlineExceededError if its deadline (wall clock)
        passed before its batch ran."""
        result: Prediction | DeadlineExceededError = await self._batched((inputs, wall_deadline))
        if isinstance(result, DeadlineExceededError):
            raise result
        return result

    @serve.batch(max_batch_size=1024, batch_wait_timeout_s=0.002, batch_size_fn=work_rows)
    async def _batched(self, requests: list[Work]) -> list[Prediction | DeadlineExceededError]:
        started = time.time()
        answers = self._answer(requests, started + self._service.expected_s())
        if len(answers) > sum(isinstance(a, DeadlineExceededError) for a in answers):
            self._service.observe(time.time() - started)
        return answers

    def _answer(
        self, requests: list[Work], finish_by: float
    ) -> list[Prediction | DeadlineExceededError]:
        """One batch on the model: the requests whose deadline is still ahead of
        ``finish_by``, when the batch is expected to be done."""
        # Read once: a swap during this batch must not mix versions within it.
        model, version = self._slot.current()
        outputs, calls = run_live(requests, model.run_validated, finish_by)
        dropped = outputs.count(None)
        if dropped:
            self._expired += dropped
            self._counters.family(self._slot.family.name).expired += dropped
        self._requests += len(requests) - dropped
        self._model_calls += calls
        return [
            not_started() if output is None else Prediction(output, version) for output in outputs
        ]

    def stats(self) -> dict[str, Any]:
        """This replica's version, device and counters."""
        return {
            **self._slot.describe(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "requests": self._requests,
            "model_calls": self._model_calls,
            "expired": self._expired,
        }


# Ray's overloads type a decorated class as the decorator factory; it is a Deployment.
FamilyModel = cast(Deployment, serve.deployment(FamilyReplica))
