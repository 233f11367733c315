"""Elastic GPU workers on a real autoscaling Ray cluster with fake GPU nodes.

Run as its own process (``python -m tests.cluster.gpu_workers_scenario OUT``):
``AutoscalingCluster`` calls ``ray stop --force``, which stops every Ray on the
machine. Writes a JSON timeline: replicas pending, GPU node added, replicas
running, an answer served, application removed, GPU node removed.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray
import requests
import yaml
from ray import serve
from ray.cluster_utils import AutoscalingCluster

from models import FAMILIES, trainable_family
from models.training import TrainSettings
from serving.app.graph import build_application
from serving.app.plan import plan_application
from serving.dataplane.model_source import DirectoryModelSource
from serving.runtime.ports import free_port
from serving.runtime.substrate import ServeRuntime
from serving.settings import MARKET_LABEL, AuthSettings, FamilyServing, ServingSettings

NPC = "npc-behavior"
CLUSTER_YAML = Path(__file__).resolve().parents[2] / "ray-cluster.yaml"
GPU_PER_REPLICA = 0.25
TIMEOUT_S = 150


class FakeCluster(AutoscalingCluster):
    """``AutoscalingCluster`` with the fake provider's config built here.

    Ray's wheel does not ship the example file the base class starts from.
    """

    def _generate_config(
        self,
        head_resources: dict[str, Any],
        worker_node_types: dict[str, Any],
        autoscaler_v2: bool = False,
        **config_kwargs: Any,
    ) -> dict[str, Any]:
        config: dict[str, Any] = {
            "cluster_name": "gameserve-fake",
            "max_workers": sum(t.get("max_workers", 0) for t in worker_node_types.values()),
            "provider": {
                "type": "fake_multinode",
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
            },
            "available_node_types": {
                **worker_node_types,
                "ray.head.default": {
                    "resources": dict(head_resources),
                    "node_config": {},
                    "max_workers": 0,
                },
            },
            "head_node_type": "ray.head.default",
            "auth": {},
            "upscaling_speed": 1.0,
            "docker": {},
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
        }
        config.update(config_kwargs)
        return config


def worker_types() -> dict[str, Any]:
    """The on-demand GPU worker types of ray-cluster.yaml, on the fake provider (the
    spot type holds what may run on spot; the scenario's families may not)."""
    declared = yaml.safe_load(CLUSTER_YAML.read_text())["available_node_types"]
    return {
        name: {
            "resources": spec["resources"],
            "node_config": {},
            "min_workers": spec.get("min_workers", 0),
            "max_workers": spec["max_workers"],
        }
        for name, spec in declared.items()
        if spec.get("resources", {}).get("GPU", 0) > 0
        and spec.get("labels", {}).get(MARKET_LABEL) != "spot"
    }


def _gpu_nodes() -> int:
    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) > 0)


def _busy_reasons() -> dict[str, list[str]]:
    """Why the autoscaler keeps each live node (empty lists once all are idle)."""
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(ray.get_runtime_context().gcs_address)
    return {
        str(n.ray_node_type_name or n.node_id): list(n.node_activity or [])
        for n in status.active_nodes
    }


def _npc_states() -> dict[str, int]:
    app = serve.status().applications.get("gameserve")
    if app is None or NPC not in app.deployments:
        return {}
    return {str(k).split(".")[-1]: v for k, v in app.deployments[NPC].replica_states.items()}


def main(out: Path) -> None:
    timeline: list[dict[str, Any]] = []
    started = time.monotonic()

    def record(event: str, **detail: Any) -> None:
        timeline.append({"t_s": round(time.monotonic() - started, 2), "event": event, **detail})

    cluster = FakeCluster(
        head_resources={"CPU": 2}, worker_node_types=worker_types(), idle_timeout_minutes=0.1
    )
    cluster.start()
    try:
        ray.init("auto", logging_level=logging.WARNING)
        record("cluster_started", gpu_nodes=_gpu_nodes())
        source = DirectoryModelSource(Path(tempfile.mkdtemp()))
        fast = TrainSettings(train_samples=3_000, epochs=1)
        source.add(NPC, "1", trainable_family(NPC).train(fast).export())
        port = free_port()
        families = {name: FamilyServing(num_cpus=0.25) for name in FAMILIES if name != NPC} | {
            NPC: FamilyServing(num_replicas=2, num_cpus=0.5, num_gpus=GPU_PER_REPLICA)
        }
        # A fake cluster on loopback, about GPU nodes coming and going: no keys needed.
        # Its Ray starts without the substrate's environment, so Serve's proxy serves.
        settings = ServingSettings(
            port=port, families=families, ingress_num_cpus=0.25, auth=AuthSettings(mode="off"),
            runtime=ServeRuntime(haproxy_ingress=False),
        )  # fmt: skip
        serve.start(
            http_options={"host": "127.0.0.1", "port": port},
            proxy_location=settings.proxy_location,
        )
        app = build_application(settings, plan_application(settings, {NPC: "1"}), source)
        deploy = threading.Thread(target=serve.run, args=(app,), kwargs={"name": "gameserve"})
        deploy.start()
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and _npc_states().get("RUNNING", 0) < 2:
            states, gpus = _npc_states(), _gpu_nodes()
            if states and (not timeline or timeline[-1].get("states") != states or
                           timeline[-1].get("gpu_nodes") != gpus):  # fmt: skip
                record("observed", states=states, gpu_nodes=gpus)
            time.sleep(0.5)
        deploy.join(timeout=60)
        record("replicas_running", states=_npc_states(), gpu_nodes=_gpu_nodes())
        body: dict[str, Any] = {
            "npcs": [{"npc_id": "a", "health": 0.2, "ammo": 0.5, "threat": 0.9}]
        }
        # A patient deadline: the first call through a fresh replica on a new node
        # can take longer than an NPC's 20 ms, and the model's answer is under test.
        answer = requests.post(
            f"http://127.0.0.1:{port}/v1/npc/act",
            json=body,
            headers={"X-Deadline-Ms": "5000"},
            timeout=30,
        )
        record(
            "answered",
            status=answer.status_code,
            model=answer.json().get("model"),
            source=answer.json().get("source"),
        )

        serve.delete("gameserve")
        record("app_deleted", gpu_nodes=_gpu_nodes())
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and _gpu_nodes() > 0:
            time.sleep(1.0)
        record("scaled_in", gpu_nodes=_gpu_nodes(), busy=_busy_reasons())
    finally:
        out.write_text(json.dumps(timeline, indent=2))
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
