"""What an ingress replica's Python heap keeps per request, and where (tracemalloc).

    .venv/bin/python -m benchmarks.heap_growth [--requests 6000] [--players 100000]

One process holds what an ingress replica holds: Ray and Serve imported, the
guarded app (a real API key, its rate bucket) over the three families' real
exported models (trained in a child: a replica never imports torch). It
serves single-NPC calls, difficulty and personalization (70/10/20), each from
a different player (``X-Player-Id`` and the player ids in the bodies), so any
state kept per player or per request grows with the count. After a warm-up,
tracemalloc compares the heap after two equal phases: growth that repeats in
the second phase is kept per request; growth only in the first is a bounded
cache filling. It sees the Python heap (numpy's buffers included), not native
allocations (ONNX Runtime's arenas, the allocator's fragmentation), which RSS
shows. Requests go in order through the ASGI app (httpx2's transport): the
replica's own HTTP listener and Ray's replica wrapper are not on this path.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from benchmarks.gc_pause import exported_models, in_fresh_process


def _bodies(i: int, player: str) -> tuple[str, str]:
    from tests.payloads import difficulty_request, npc_tick, rank_request

    slot = i % 10
    if slot < 7:
        return "/v1/npc/act", json.dumps(npc_tick(1, prefix=player))
    if slot == 7:
        body = difficulty_request(1)
        body["players"][0]["player_id"] = player
        return "/v1/difficulty/recommend", json.dumps(body)
    body = rank_request(20, seed=i % 7)
    body["player_id"] = player
    return "/v1/personalization/rank", json.dumps(body)


def _top(after: tracemalloc.Snapshot, before: tracemalloc.Snapshot) -> list[str]:
    lines = []
    for stat in after.compare_to(before, "traceback")[:5]:
        ours = [f for f in stat.traceback if "/work/" in f.filename or "gameserve" in f.filename]
        where = ours[-1] if ours else stat.traceback[-1]
        lines.append(f"    {stat.size_diff / 1e3:+8.1f} kB {stat.count_diff:+6d} blocks  "
                     f"{Path(where.filename).name}:{where.lineno}")  # fmt: skip
    return lines


def _serve(exported: dict[str, bytes], requests: int, players: int) -> list[str]:
    import httpx2
    import ray.serve  # noqa: F401  (what a replica holds)

    from models import FAMILIES
    from models.runtime import OnnxModel
    from serving.dataplane.admission import Admission, AdmissionBounds
    from serving.dataplane.backend import LocalBackend
    from serving.dataplane.plane import DataPlane
    from serving.http.app import create_app
    from serving.protocol.keys import KeyStore
    from serving.settings import AuthSettings, ServingSettings

    keys = Path(tempfile.mkdtemp(prefix="gameserve-heap-")) / "keys.json"
    key = KeyStore(keys).create("heap", ["infer"])
    backends = {
        name: LocalBackend(name, OnnxModel(model, FAMILIES[name].contract), "1")
        for name, model in exported.items()
    }
    settings = ServingSettings(auth=AuthSettings(keys_file=keys))
    # One caller, in order: nothing to shed, so no request is turned away by the loop's lag.
    calm = Admission(AdmissionBounds(normal_lag_ms=1e6, best_effort_lag_ms=1e6))
    plane = DataPlane(backends, settings.max_rows_per_request, admission=calm)
    app = create_app(plane, settings)
    assert "torch" not in sys.modules
    headers = {"X-Deadline-Ms": "10000", "content-type": "application/json",
               "authorization": f"Bearer {key}"}  # fmt: skip

    async def play(start: int, count: int) -> None:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://gs") as client:
            for i in range(start, start + count):
                player = f"player-{i % players}"
                path, body = _bodies(i, player)
                answer = await client.post(
                    path, content=body, headers={**headers, "X-Player-Id": player}
                )
                assert answer.status_code == 200, answer.text

    asyncio.run(play(0, 1000))  # warm-up: first calls, lazy imports, buffers
    gc.collect()
    tracemalloc.start(12)
    snapshots = [tracemalloc.take_snapshot()]
    report = []
    for phase in (1, 2):
        started = time.perf_counter()
        asyncio.run(play(1000 + (phase - 1) * requests, requests))
        elapsed = time.perf_counter() - started
        gc.collect()
        snapshots.append(tracemalloc.take_snapshot())
        grown = sum(s.size_diff for s in snapshots[-1].compare_to(snapshots[-2], "filename"))
        report.append(
            f"  phase {phase}: {requests:,} requests in {elapsed:.0f} s, heap "
            f"{grown / 1e3:+.1f} kB = {grown / requests:+.1f} B/request; largest:"
        )
        report += _top(snapshots[-1], snapshots[-2])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=6000, help="per phase")
    parser.add_argument("--players", type=int, default=100_000)
    args = parser.parse_args()
    exported = in_fresh_process(exported_models)
    print(f"the guarded app in one process, a new player per request "
          f"(of {args.players:,}), 70/10/20 single NPC/difficulty/personalization")  # fmt: skip
    print("\n".join(in_fresh_process(_serve, exported, args.requests, args.players)))


if __name__ == "__main__":
    main()
