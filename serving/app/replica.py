"""The Ray Serve deployment that runs one family's ONNX model, batched."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from ray import serve
from ray.serve import Deployment

from models import get_family
from models.catalog import install_families
from models.spec import FamilySpec
from serving.app.config import ReplicaConfig
from serving.app.replica_logging import route_to_serve_log
from serving.dataplane.backend import Prediction
from serving.dataplane.batching import run_batched, total_rows
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
        install_families(FamilySpec.model_validate(spec) for spec in family_specs or [])
        self._slot = ModelSlot(get_family(family), source, intra_op_threads)
        self._requests = 0
        self._model_calls = 0

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Swap the model in place; requests already batched finish on the old one."""
        settings = ReplicaConfig.model_validate(config)
        self.predict.set_max_batch_size(settings.max_batch_rows)  # type: ignore[attr-defined]
        self.predict.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)  # type: ignore[attr-defined]
        if settings.version is not None:
            await self._slot.load(settings.version)

    @serve.batch(max_batch_size=1024, batch_wait_timeout_s=0.002, batch_size_fn=total_rows)
    async def predict(self, requests: list[dict[str, np.ndarray]]) -> list[Prediction]:
        # Read once: a swap during this batch must not mix versions within it.
        model, version = self._slot.current()
        outputs, calls = run_batched(requests, model.run_validated)
        self._requests += len(requests)
        self._model_calls += calls
        return [Prediction(o, version) for o in outputs]

    def stats(self) -> dict[str, Any]:
        """This replica's version, device and counters."""
        return {
            **self._slot.describe(),
            "requests": self._requests,
            "model_calls": self._model_calls,
        }


# Ray's overloads type a decorated class as the decorator factory; it is a Deployment.
FamilyModel = cast(Deployment, serve.deployment(FamilyReplica))
