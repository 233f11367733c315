"""How often and how long the garbage collector stops a replica on the request path.

    .venv/bin/python -m benchmarks.gc_pause [--requests 30000]

Two fresh processes, one after the other, each as an ingress replica holds
itself: Ray and Serve imported, the app over the three families' real
exported models (trained in a child: a replica never imports torch). One then
collects and freezes its heap (``gc.freeze``: start-up's objects out of every
later walk); the other does not. Each serves the same stream of game requests
through the ASGI app (the 70/10/20 mix of 16-NPC ticks, difficulty and
personalization), while ``gc.callbacks`` time every collection. A full
(generation 2) collection stops the event loop for as long as it takes: the
figures are how many came and the longest. Same machine, same run: compare the
two lines, not the absolute times, which vary with the machine's speed.

Measured 2026-12-07 (30,000 requests): no full collection in either process and
5 young ones: the request path frees what it allocates by reference counting,
so the collector is not what makes late answers, and replicas do not freeze
their heap (a full collection of start-up's ~166,000 objects would take 70-80
ms; nothing on this path triggers one).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def exported_models() -> dict[str, bytes]:
    """The three families' real exported models, quickly trained (call it in a child)."""
    from models import trainable_families
    from models.training import TrainSettings

    quick = TrainSettings(train_samples=500, epochs=1, eval_samples=100)
    return {name: family.train(quick).export() for name, family in trainable_families().items()}


def in_fresh_process(work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` in a new interpreter (spawned): a replica's heap, not this one's."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        return child.submit(work, *args).result()


class _Pauses:
    """Every collection's generation and duration, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.full_ms: list[float] = []
        self.young = 0
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        elif info["generation"] == 2:
            self.full_ms.append((time.perf_counter() - self.started) * 1000)
        else:
            self.young += 1


def _serve(exported: dict[str, bytes], settled: bool, requests: int) -> dict[str, Any]:
    import httpx2
    import ray.serve  # noqa: F401  (what a replica holds)

    from models import FAMILIES
    from models.runtime import OnnxModel
    from serving.dataplane.admission import Admission, AdmissionBounds
    from serving.dataplane.backend import LocalBackend
    from serving.dataplane.plane import DataPlane
    from serving.http.app import create_app
    from serving.settings import AuthSettings, ServingSettings
    from tests.payloads import difficulty_request, npc_tick, rank_request

    backends = {
        name: LocalBackend(name, OnnxModel(model, FAMILIES[name].contract), "1")
        for name, model in exported.items()
    }
    settings = ServingSettings(auth=AuthSettings(mode="off"))
    # One caller, in order: nothing to shed, so no request is turned away by the loop's lag.
    calm = Admission(AdmissionBounds(normal_lag_ms=1e6, best_effort_lag_ms=1e6))
    plane = DataPlane(backends, settings.max_rows_per_request, admission=calm)
    app = create_app(plane, settings)
    assert "torch" not in sys.modules
    if settled:
        gc.collect()
        gc.freeze()
    tracked = len(gc.get_objects())
    patient = {"X-Deadline-Ms": "10000"}
    mix = [("/v1/npc/act", json.dumps(npc_tick(16)))] * 7 + [
        ("/v1/difficulty/recommend", json.dumps(difficulty_request(1))),
        ("/v1/personalization/rank", json.dumps(rank_request(50))),
        ("/v1/personalization/rank", json.dumps(rank_request(50, seed=1))),
    ]

    async def play() -> tuple[float, list[float]]:
        transport = httpx2.ASGITransport(app=app)
        headers = {**patient, "content-type": "application/json"}
        latencies = []
        async with httpx2.AsyncClient(transport=transport, base_url="http://gs") as client:
            started = time.perf_counter()
            for i in range(requests):
                path, body = mix[i % len(mix)]
                sent = time.perf_counter()
                answer = await client.post(path, content=body, headers=headers)
                latencies.append((time.perf_counter() - sent) * 1000)
                assert answer.status_code == 200, answer.text
            return time.perf_counter() - started, latencies

    pauses = _Pauses()
    elapsed_s, latencies = asyncio.run(play())
    gc.callbacks.remove(pauses)
    latencies.sort()
    return {
        "tracked": tracked,
        "full": len(pauses.full_ms),
        "longest_ms": max(pauses.full_ms, default=0.0),
        "total_ms": sum(pauses.full_ms),
        "young": pauses.young,
        "rate": requests / elapsed_s,
        "p999_ms": latencies[int(len(latencies) * 0.999)],
        "max_ms": latencies[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=30_000)
    args = parser.parse_args()
    exported = in_fresh_process(exported_models)
    print(f"{args.requests:,} game requests in one process, in order (70% 16-NPC ticks, "
          "10% difficulty, 20% personalization of 50 candidates)")  # fmt: skip
    print(f"{'heap':<10}{'tracked':>9}{'full GCs':>10}{'longest':>10}{'in full GCs':>13}"
          f"{'young GCs':>11}{'req/s':>8}{'p99.9 ms':>10}{'max ms':>8}")  # fmt: skip
    for settled in (False, True):
        r = in_fresh_process(_serve, exported, settled, args.requests)
        print(f"{'frozen' if settled else 'as is':<10}{r['tracked']:>9,}{r['full']:>10}"
              f"{r['longest_ms']:>8.1f}ms{r['total_ms']:>11.0f}ms{r['young']:>11,}"
              f"{r['rate']:>8,.0f}{r['p999_ms']:>10.2f}{r['max_ms']:>8.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
