"""An emulated accelerator: a family replica whose model call holds it like a GPU kernel.

Test and benchmark code only, never the default stack. On 2 cores more CPU
replicas add no compute, so a spike benchmark there shows the policy's moves
and nothing else. This replica makes replica count real: each batch holds the
replica for a fixed service time (``base_ms`` + ``per_row_ms`` per row),
sleeping, as a GPU kernel holds its stream while the CPU is free; one batch
runs at a time (``serve.batch`` runs one per replica). It declares ``GPU`` and
runs on the fake GPU nodes of ``AutoscalingCluster``, so capacity grows with
nodes as it would on real GPUs. The model still runs (ONNX Runtime, a few
microseconds for a few rows): answers are the model's.

Ray's fake node provider starts a node in about a second; a cloud GPU node
takes tens of seconds. A replica on a node younger than ``node_start_s`` waits
out the rest in its constructor, so the node serves ``node_start_s`` after it
was started, as it would after a real boot.

The terms reach replicas through the environment of the processes the cluster
starts (``EmulatedAccelerator.environment``), read when a replica starts.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, cast

import psutil  # type: ignore[import-untyped]
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Deployment

from models.errors import DeadlineExceededError
from serving.app.replica import FamilyReplica
from serving.dataplane.backend import Prediction
from serving.dataplane.batching import Work, work_rows

ENV = "GAMESERVE_EMULATED_ACCELERATOR"


class EmulatedAccelerator(BaseModel):
    base_ms: float = Field(default=50.0, ge=0, description="Service time of a batch")
    per_row_ms: float = Field(default=0.05, ge=0, description="And per row in it")
    node_start_s: float = Field(default=20.0, ge=0, description="A node's boot, emulated")

    def service_s(self, rows: int) -> float:
        return (self.base_ms + self.per_row_ms * rows) / 1000

    def rows_per_s(self, batch_rows: int) -> float:
        """What one replica answers at most, in batches of ``batch_rows``."""
        return batch_rows / self.service_s(batch_rows)

    def environment(self) -> dict[str, str]:
        """Set in the environment of whoever starts the cluster's nodes."""
        return {ENV: self.model_dump_json()}

    @classmethod
    def from_environment(cls) -> EmulatedAccelerator:
        given = os.environ.get(ENV)
        return cls.model_validate_json(given) if given else cls()


def node_started_at() -> float:
    """When this process's node started: its raylet's start (the process above us)."""
    process: psutil.Process | None = psutil.Process(os.getpid())
    while process is not None:
        if process.name() == "raylet":
            return float(process.create_time())
        process = process.parent()
    return time.time()  # not under a raylet: treated as a node that just started


class EmulatedAcceleratorReplica(FamilyReplica):
    """A family replica whose every batch holds it for the accelerator's service time."""

    def __init__(
        self,
        family: str,
        source: Any,
        intra_op_threads: int = 1,
        family_specs: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(family, source, intra_op_threads, family_specs)
        self.accelerator = EmulatedAccelerator.from_environment()
        booting = node_started_at() + self.accelerator.node_start_s - time.time()
        if booting > 0:
            time.sleep(booting)  # the node is still booting: Serve sees a starting replica

    @serve.batch(max_batch_size=1024, batch_wait_timeout_s=0.002, batch_size_fn=work_rows)
    async def _batched(self, requests: list[Work]) -> list[Prediction | DeadlineExceededError]:
        # What cannot finish before its deadline is dropped before the kernel, as the
        # CPU replica does (its ServiceTime learns what this one knows).
        finish_by = time.time() + self.accelerator.service_s(work_rows(requests))
        live = [work for work in requests if work[1] is None or work[1] > finish_by]
        if live:
            await asyncio.sleep(self.accelerator.service_s(work_rows(live)))
        return self._answer(requests, finish_by)


EmulatedAcceleratorModel = cast(Deployment, serve.deployment(EmulatedAcceleratorReplica))
