"""Rows/s per family on the CPU and on the GPU, at batch 1, 32, 256 and 1,024.

    .venv/bin/python -m benchmarks.gpu [--seconds 3] [--serving]

Trains each family once (as the stack's bootstrap does), then times ONNX
Runtime sessions through gameserve's own ``OnnxModel`` (I/O binding on CUDA
for batches) on each execution provider this machine has: the CPU always, CUDA
where onnxruntime-gpu finds a GPU. Prints rows/s and the GPU/CPU ratio per
family and batch. With ``--serving`` it also deploys the application on a local
Ray with the NPC family on a quarter of a GPU (``num_gpus: 0.25``, its own
deployment) and drives 128-NPC ticks through HTTP with wrk, beside the same on
the CPU. On a machine without a GPU it says so and prints the CPU column only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import wrk
from benchmarks.local_ray import local_ray, train_models
from models import FAMILIES, get_family
from models.runtime import CPU_PROVIDER, CUDA_PROVIDER, OnnxModel, gpu_visible
from serving.dataplane.model_source import DirectoryModelSource
from serving.runtime.ports import free_port

BATCHES = (1, 32, 256, 1024)


def rows_per_s(model: OnnxModel, inputs: dict[str, np.ndarray], seconds: float) -> float:
    rows = int(next(iter(inputs.values())).shape[0])
    for _ in range(3):  # the first runs allocate (and, on CUDA, pick kernels)
        model.run_validated(inputs)
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        model.run_validated(inputs)
        runs += 1
    return float(runs * rows / elapsed)


def sessions(root: Path, family: str) -> dict[str, OnnxModel]:
    contract = get_family(family).contract
    artifact = DirectoryModelSource(root).fetch(family, "1")
    found = {"cpu": OnnxModel(artifact, contract, prefer_gpu=False)}
    cuda = OnnxModel(artifact, contract, prefer_gpu=True)
    if cuda.providers and cuda.providers[0] == CUDA_PROVIDER:
        found["cuda"] = cuda
    return found


def serving(root: Path, seconds: float) -> list[str]:
    """128-NPC ticks over HTTP, the NPC family on the CPU and on a quarter GPU."""
    from benchmarks.spike import deploy_settings
    from serving.app.gateway import ServeGateway
    from serving.runtime.substrate import ServeRuntime
    from serving.settings import FamilyServing
    from tests.payloads import npc_tick

    lines = []
    body = json.dumps(npc_tick(128)).encode()
    runtime = ServeRuntime().with_free_replica_port()
    with local_ray(runtime) as dashboard:
        for label, npc in (
            ("cpu", FamilyServing(placement="deployment")),
            ("gpu 0.25", FamilyServing(num_gpus=0.25)),
        ):
            settings, spec, key = deploy_settings(root, free_port(), runtime, {"npc-behavior": npc})
            gateway = ServeGateway(settings, spec, dashboard)
            gateway.deploy(dict.fromkeys(FAMILIES, "1"))
            load = wrk.Load(
                "/v1/npc/act", body, {"Authorization": f"Bearer {key}",
                                      "Content-Type": "application/json"}, 16, 128,
            )  # fmt: skip
            result = wrk.run(gateway.url, load, seconds)
            lines.append(
                f"serving, NPC {label:9s} 128-NPC ticks: {result.requests_per_s * 128:12,.0f} "
                f"rows/s  p50 {result.p50_ms:.1f} ms  p99 {result.p99_ms:.1f} ms  "
                f"(bad {result.bad})"
            )
            gateway.stop()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--serving", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gameserve-gpu-"))
    train_models(root)
    if not gpu_visible():
        print(f"no GPU visible: {CPU_PROVIDER} only")
    print(f"{'family':20s} {'batch':>6s} {'cpu rows/s':>14s} {'cuda rows/s':>14s} {'ratio':>7s}")
    for family in FAMILIES:
        models = sessions(root, family)
        for batch in BATCHES:
            inputs = get_family(family).example_inputs(rows=batch)
            figures = {name: rows_per_s(m, inputs, args.seconds) for name, m in models.items()}
            cuda = figures.get("cuda")
            print(
                f"{family:20s} {batch:6d} {figures['cpu']:14,.0f} "
                + (f"{cuda:14,.0f} {cuda / figures['cpu']:6.2f}x" if cuda else f"{'-':>14s}")
            )
    if args.serving:
        if not gpu_visible():
            print("serving with num_gpus: skipped, no GPU")
        else:
            for line in serving(root, args.seconds * 3):
                print(line)


if __name__ == "__main__":
    main()
