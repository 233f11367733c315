"""What one 16-NPC tick costs an ingress replica, piece by piece, in process on one core.

    .venv/bin/python -m benchmarks.hot_path [--npcs 16] [--core 1]

Each piece is timed alone (best of five repeats), then the whole data-plane
path of a decoded request: the model's (dispatch to the in-ingress model pool,
ONNX Runtime, output checks) against the fallback's (the teacher script). The
per-NPC encoding and the validating decoder they replaced run beside them, so
the ratios are from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from models import get_family, trainable_family
from models.npc import ACTIONS, NpcActRequest, NpcActResponse
from models.npc.encoding import encode_observations, reference_features
from models.runtime import OnnxModel
from models.training import TrainSettings
from serving.dataplane.backend import Replicas
from serving.dataplane.colocated import ColocatedBackend
from serving.dataplane.game_time import GameTimeCounters
from serving.dataplane.model_slot import ModelSlot
from serving.dataplane.model_source import DirectoryModelSource
from serving.dataplane.plane import DataPlane
from serving.http.game_api import answer_game_request
from tests.payloads import npc_tick

NPC = "npc-behavior"


def _us(work: Callable[[], Any], number: int = 2000) -> float:
    return min(timeit.repeat(work, number=number, repeat=5)) / number * 1e6


def _validated_decode(request: NpcActRequest, probs: np.ndarray) -> NpcActResponse:
    """The decoder before: dicts per NPC, validated by pydantic."""
    best = probs.argmax(axis=1).tolist()
    rounded = np.round(probs.astype(np.float64), 6).tolist()
    return NpcActResponse.model_validate(
        {
            "decisions": [
                {
                    "npc_id": o.npc_id,
                    "action": ACTIONS[a],
                    "probabilities": dict(zip(ACTIONS, r, strict=True)),
                }
                for o, a, r in zip(request.npcs, best, rounded, strict=True)
            ]
        }
    )


async def _async_us(work: Callable[[], Awaitable[Any]], number: int = 2000) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(number):
            await work()
        best = min(best, (time.perf_counter() - started) / number * 1e6)
    return best


async def _plane_paths(root: Path, request: NpcActRequest) -> tuple[float, float]:
    slot = ModelSlot(get_family(NPC), DirectoryModelSource(root))
    await slot.load("1")

    async def one_replica() -> Replicas:
        return Replicas(1, None)

    backend = ColocatedBackend(slot, one_replica, threads=1, counters=GameTimeCounters())
    plane = DataPlane({NPC: backend}, 1024, counters=backend.counters)

    async def answered(admitted: bool) -> None:
        call, ticket = plane.admit(NPC, "game", received=time.monotonic(), deadline_ms=1000)
        call.admitted = admitted
        with ticket:
            _, answer = await answer_game_request(plane, NPC, request, call=call)
        assert (answer.source == "model") is admitted

    model = await _async_us(lambda: answered(True), 1000)
    fallback = await _async_us(lambda: answered(False), 1000)
    return model, fallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--npcs", type=int, default=16)
    parser.add_argument("--core", type=int, default=1)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})
    family = trainable_family(NPC)
    onnx = family.train(TrainSettings(train_samples=4_000, eval_samples=500, epochs=2)).export()
    root = Path(tempfile.mkdtemp(prefix="gameserve-hot-path-"))
    DirectoryModelSource(root).add(NPC, "1", onnx)
    body = json.dumps(npc_tick(args.npcs)).encode()
    request = NpcActRequest.model_validate_json(body)
    x = {"observation": encode_observations(request.npcs)}
    model = OnnxModel(onnx, family.contract, prefer_gpu=False)
    probs = model.run_validated(x)["action_probs"]
    one = {"observation": x["observation"][:1]}
    rows = [
        ("parse the JSON body (pydantic)", _us(lambda: NpcActRequest.model_validate_json(body))),
        ("encode, per feature (the reference)",
         _us(lambda: np.asarray([reference_features(o) for o in request.npcs], np.float32))),
        ("encode, one pass and one conversion", _us(lambda: encode_observations(request.npcs))),
        ("decode, validated dicts (before)", _us(lambda: _validated_decode(request, probs))),
        ("decode, constructed", _us(lambda: family.decode(request, {"action_probs": probs}))),
        ("ONNX Runtime run", _us(lambda: model.run_validated(x))),
        ("output checks (invalid_rows)", _us(lambda: family.invalid_rows({"action_probs": probs}))),
        ("teacher fallback outputs", _us(lambda: family.fallback_outputs(x))),
        ("teacher fallback outputs, one NPC", _us(lambda: family.fallback_outputs(one))),
        ("ONNX Runtime run, one NPC", _us(lambda: model.run_validated(one))),
    ]  # fmt: skip
    model_path, fallback_path = asyncio.run(_plane_paths(root, request))
    rows += [
        ("data plane, model path (encode..decode)", model_path),
        ("data plane, fallback path (encode..decode)", fallback_path),
    ]
    print(f"one {args.npcs}-NPC tick on core {args.core}, µs (best of 5):")
    for name, value in rows:
        print(f"  {name:<44}{value:>9.1f}")
    print(f"  fallback path / model path: {fallback_path / model_path:.2f}")


if __name__ == "__main__":
    main()
