"""An e-sports final on elastic (emulated) accelerator nodes: one scenario, one process.

    python -m tests.cluster.event_scenario SPEC.json OUT.json

``AutoscalingCluster`` calls ``ray stop --force``, so each scenario runs in a
process of its own (``benchmarks/event.py`` runs three; a cluster test runs a
short one). A fake cluster: a CPU head (ingress, collector, proxy) and GPU
nodes added on demand up to ``node_limit``, each holding one replica of the
NPC family on an emulated accelerator (``emulated_accelerator.py``). The load
is open loop (game servers do not wait): a baseline, ten times that, the
baseline again, once per compressed day. Only the last day is measured; the
days before it are history for the learned floor.

- ``announced``: the spike is a calendar event whose lead covers a node's start
  and a replica's.
- ``learned``: no calendar; a Holt-Winters forecast of the family's own request
  rate (the collector's history, season = one compressed day) raises the floor.
- ``reactive``: queue depth only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import ray
from pydantic import BaseModel, Field
from ray import serve

from models import FAMILIES, trainable_family
from models.training import TrainSettings
from serving.app.autoscaling import CalendarEvent, QueueDepthSettings
from serving.app.demand_forecast import ForecastSettings
from serving.app.graph import build_application
from serving.app.plan import plan_application
from serving.dataplane.model_source import DirectoryModelSource
from serving.runtime.haproxy_edge import plan_for
from serving.runtime.ports import free_port
from serving.runtime.substrate import ServeRuntime
from serving.settings import AuthSettings, FamilyServing, ServingSettings
from tests.cluster.emulated_accelerator import EmulatedAccelerator, EmulatedAcceleratorModel
from tests.cluster.event_load import NPC, ROWS, Load, gpu_nodes, npc_replicas
from tests.cluster.gpu_workers_scenario import FakeCluster

ROOT = Path(__file__).resolve().parents[2]
BATCH = 4  # ticks one accelerator call may take: what arrived while the last one ran
ONGOING = 4  # per replica


class EventSpec(BaseModel):
    """One scenario's terms."""

    how: Literal["announced", "learned", "reactive"]
    accelerator: EmulatedAccelerator = Field(default_factory=EmulatedAccelerator)
    accelerators_per_node: int = Field(default=1, ge=1, description="GPUs a node holds")
    node_limit: int = Field(default=6, ge=1)
    ceiling: int | None = Field(
        default=None, ge=1, description="Replicas the policy may ask for (None: what the "
        "node limit holds); more than that is a cluster that fills.",
    )  # fmt: skip
    placement_patience_s: float = Field(
        default=120.0, gt=0, description="The policy's wait for a node before it holds"
    )
    baseline_share: float = Field(default=0.3, description="Of one node's capacity")
    multiplier: float = 10.0
    baseline_s: float = 40.0
    spike_s: float = 40.0
    after_s: float = 40.0
    days: int = Field(default=1, ge=1, description="Compressed days; the last is measured")
    deadline_ms: float = Field(
        default=150.0, description="NPC's deadline here: the emulated kernel (53 ms a tick) is "
        "slower than a real one by design, so that 2 cores carry ten times a node's load "
        "with every process of the cluster on them; the deadline is scaled alike."
    )  # fmt: skip
    utilisation: float = Field(default=0.75, description="What the floors plan per replica")
    idle_timeout_s: float = 20.0
    deploy_s: float = Field(
        default=60.0, description="Allowed for the deploy, after a node's start, before the "
        "measured day (the calendar and the forecast count from its start)",
    )  # fmt: skip
    pin: bool = Field(default=False, description="The cluster on core 1, the load on core 0")

    @property
    def day_s(self) -> float:
        return self.baseline_s + self.spike_s + self.after_s

    @property
    def replica_rps(self) -> float:
        """Requests/s one replica (one accelerator) answers at most."""
        return 1 / self.accelerator.service_s(ROWS)

    @property
    def baseline_rps(self) -> float:
        return self.baseline_share * self.replica_rps * self.accelerators_per_node

    @property
    def max_replicas(self) -> int:
        return self.node_limit * self.accelerators_per_node

    @property
    def spike_replicas(self) -> int:
        """What the spike needs at the planned utilisation, within the node limit."""
        needed = self.baseline_rps * self.multiplier * 1.2 / (self.replica_rps * self.utilisation)
        return min(math.ceil(needed), self.max_replicas)

    @property
    def lead_s(self) -> float:
        """A node's start, a replica's, and a margin for the policy's look-back."""
        return self.accelerator.node_start_s + 25.0

    def policy(self, day_zero: float) -> QueueDepthSettings:
        service_ms = self.accelerator.service_s(ROWS) * 1000
        calendar: list[CalendarEvent] = []
        forecast = None
        if self.how == "announced":
            start = day_zero + (self.days - 1) * self.day_s + self.baseline_s
            calendar = [
                CalendarEvent(name="final", start_s=start, end_s=start + self.spike_s,
                              min_replicas=self.spike_replicas, lead_s=self.lead_s)
            ]  # fmt: skip
        if self.how == "learned":
            bucket_s = self.day_s / 30
            forecast = ForecastSettings(
                bucket_s=bucket_s, season_s=self.day_s, lead_s=self.lead_s,
                requests_per_replica_s=self.replica_rps * self.utilisation, headroom=1.2,
            )  # fmt: skip
        # The budget is the planned share of the deadline: with the whole deadline as
        # its budget the policy held 3 replicas at 99% busy through a spike (a replica
        # answers a tick in 53 ms of 150, at 2.8 ticks in the system each), and half
        # its ticks fell back (this benchmark's first run).
        return QueueDepthSettings(
            min_replicas=1, max_replicas=self.ceiling or self.max_replicas,
            placement_patience_s=self.placement_patience_s,
            latency_budget_ms=self.deadline_ms * self.utilisation, service_time_ms=service_ms,
            calendar=calendar, forecast=forecast,
        )  # fmt: skip

    def phases(self) -> list[tuple[str, float, float]]:
        day = [
            ("baseline", self.baseline_s, self.baseline_rps),
            ("spike", self.spike_s, self.baseline_rps * self.multiplier),
            ("after", self.after_s, self.baseline_rps),
        ]
        return day * self.days


def run(spec: EventSpec, out: Path) -> None:
    """The scenario, start to end; writes its record to ``out`` (JSON)."""
    record: dict[str, Any] = {"spec": spec.model_dump(mode="json"), "events": []}
    started = time.monotonic()

    def event(name: str, **detail: Any) -> None:
        record["events"].append({"t_s": round(time.monotonic() - started, 1), "event": name,
                                 **detail})  # fmt: skip

    port = free_port()
    # Measured day starts once the app is up; the calendar and forecast count from it.
    deploy_s = spec.accelerator.node_start_s + spec.deploy_s
    day_zero = time.time() + deploy_s
    settings = _settings(spec, port, day_zero)
    pinned = spec.pin and len(os.sched_getaffinity(0)) >= 2
    if pinned:  # the cluster and all it starts on core 1; this load generator on core 0
        os.sched_setaffinity(0, {1})
    os.environ.update(spec.accelerator.environment())
    # No CPU on GPU nodes: the ingress and the collector stay on the head, so an
    # idle GPU node holds nothing and leaves.
    gpu_node = {
        "resources": {"CPU": 0, "GPU": spec.accelerators_per_node},
        "node_config": {},
        "min_workers": 0,
        "max_workers": spec.node_limit,
    }
    cluster = FakeCluster(
        head_resources={"CPU": 2},
        worker_node_types={"gpu-node": gpu_node},
        idle_timeout_minutes=spec.idle_timeout_s / 60,
    )
    # The substrate's environment (HAProxy ingress, the edge's game-time rules)
    # while the head starts: its processes, and the nodes it adds, inherit it.
    with settings.runtime.applied(edge=plan_for(settings)):
        cluster.start()
    try:
        ray.init("auto", logging_level=logging.WARNING, log_to_driver=False)
        source = DirectoryModelSource(Path(tempfile.mkdtemp(prefix="gameserve-event-")))
        fast = TrainSettings(train_samples=3_000, epochs=1)
        source.add(NPC, "1", trainable_family(NPC).train(fast).export())
        serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
        app = build_application(
            settings, plan_application(settings, {NPC: "1"}), source, EmulatedAcceleratorModel
        )
        deploy = threading.Thread(target=serve.run, args=(app,), kwargs={"name": "gameserve"})
        deploy.start()
        deploy.join(timeout=deploy_s * 3)
        event("deployed", nodes=gpu_nodes(), replicas=npc_replicas("gameserve"))
        if pinned:
            os.sched_setaffinity(0, {0})
        wait = day_zero - time.time()
        if wait > 0:
            time.sleep(wait)
        url = f"http://127.0.0.1:{port}"
        load = Load(url, spec.deadline_ms, "gameserve", watch_capacity=spec.ceiling is not None)
        event("load_started")
        asyncio.run(load.play(spec.phases()))
        event("load_done")
        record["seconds"] = load.seconds[-int(spec.day_s) :]  # the measured day
    finally:
        out.write_text(json.dumps(record))
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


def _settings(spec: EventSpec, port: int, day_zero: float) -> ServingSettings:
    """The stack's defaults (HAProxy, two ingress replicas), NPC on the emulated
    accelerator, no keys (loopback). An accelerator call takes up to ``BATCH`` ticks."""
    npc = FamilyServing(
        num_cpus=0, num_gpus=1.0, max_batch_rows=BATCH * ROWS, batch_wait_timeout_s=0.0,
        max_ongoing_requests=ONGOING, max_queued_requests=64, deadline_ms=spec.deadline_ms,
        autoscaling=spec.policy(day_zero),
    )  # fmt: skip
    others = {name: FamilyServing(num_cpus=0.1) for name in FAMILIES if name != NPC}
    return ServingSettings(
        port=port, families={**others, NPC: npc}, ingress_num_cpus=0.25,
        auth=AuthSettings(mode="off"),
        runtime=ServeRuntime().with_free_replica_port(),
    )  # fmt: skip


def run_in_own_process(spec: EventSpec, timeout_s: float) -> dict[str, Any]:
    """One scenario in its own process (it stops every Ray on the machine when done)."""
    folder = Path(tempfile.mkdtemp(prefix="gameserve-event-"))
    (folder / "spec.json").write_text(spec.model_dump_json())
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "tests.cluster.event_scenario",
         str(folder / "spec.json"), str(folder / "record.json")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    record_path = folder / "record.json"
    if done.returncode != 0 or not record_path.is_file():
        raise RuntimeError(f"{spec.how} failed ({done.returncode}): {done.stderr[-3000:]}")
    record: dict[str, Any] = json.loads(record_path.read_text())
    return record


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The measured day of a scenario's record, in the figures the event table prints."""
    spec = EventSpec.model_validate(record["spec"])
    seconds = record.get("seconds") or []
    spike = range(int(spec.baseline_s), int(spec.baseline_s + spec.spike_s))

    def total(key: str) -> int:
        return sum(second[key] for second in seconds)

    latencies = np.asarray([x for second in seconds for x in second["latency_ms"]])
    # Served: from the first second after which 90% of each second's ticks get the
    # model's answer for 5 s running (stray misses under load do not reset it).
    good = [t < len(seconds) and seconds[t]["model"] >= 0.9 * seconds[t]["offered"]
            for t in spike]  # fmt: skip
    served_after = next((i for i in range(len(good)) if all(good[i : i + 5])), len(good))
    # Clean: from the spike's start to the end of its last second with a refusal (0:
    # none); a collapse after a good start shows here, where served_after misses it.
    refused = [t - spike.start + 1 for t in spike if t < len(seconds) and seconds[t]["refused"]]
    # A sample under load can take over a second: the last one taken by the spike's start.
    sampled = [s["replicas"] for s in seconds[: spike.start + 1] if s["replicas"] is not None]
    nodes = [second["nodes"] for second in seconds if second["nodes"] is not None]
    return {
        "how": spec.how,
        "offered": total("offered"),
        "model": total("model"),
        "fallback": total("fallback"),
        "refused": total("refused"),
        "refused_without_retry_after": total("refused_no_retry_after"),
        "failed": total("failed"),
        "unsent": total("unsent"),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1) if latencies.size else None,
        "late": int((latencies > spec.deadline_ms + 5).sum()),
        "replicas_at_spike": sampled[-1][0] if sampled else 0,
        "spike_replicas": spec.spike_replicas,
        "served_after_s": served_after,
        "clean_after_s": max(refused, default=0),
        "peak_nodes": max(nodes, default=0),
        "exhausted_s": sum(1 for second in seconds if second.get("exhausted")),
        "node_minutes": round(sum(nodes) / 60, 2),
    }


if __name__ == "__main__":
    run(EventSpec.model_validate_json(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
