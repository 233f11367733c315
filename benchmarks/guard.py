"""What the front door costs per request: the ingress app in-process, guard on and off.

Runs the same single-NPC ``/v1/npc/act`` call through the whole ASGI app (no
sockets, no Ray: the app's own CPU per request) with authentication off, with
a valid key, and with a valid key that has a rate limit, and prints µs per
call and each ratio to the run without authentication, measured in this run.

    .venv/bin/python -m benchmarks.guard
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from models import FAMILIES, trainable_family
from models.runtime import OnnxModel
from models.training import TrainSettings
from serving.dataplane.backend import LocalBackend, Prediction
from serving.dataplane.game_time import Deadline
from serving.dataplane.plane import DataPlane
from serving.http.app import create_app
from serving.protocol.keys import KeyStore
from serving.settings import AuthSettings, ServingSettings
from tests.payloads import npc_tick

NPC = "npc-behavior"


async def _call(app: Any, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    status = 0
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/npc/act", "raw_path": b"/v1/npc/act",
        "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    await app(scope, receive, send)
    return status


async def _per_call_us(app: Any, headers: list[tuple[bytes, bytes]], calls: int) -> float:
    body = json.dumps(npc_tick(1)).encode()
    headers = [(b"content-type", b"application/json"), *headers]
    for _ in range(200):  # warm-up
        assert await _call(app, body, headers) == 200
    started = time.perf_counter()
    for _ in range(calls):
        await _call(app, body, headers)
    return (time.perf_counter() - started) / calls * 1e6


class InlineBackend(LocalBackend):
    """The model on the event loop, as the ingress serves a colocated champion: no
    thread hop (~0.5 ms here) to drown the guard's microseconds."""

    async def predict(
        self, inputs: dict[str, np.ndarray], deadline: Deadline | None = None
    ) -> Prediction:
        model, version = self.model, self.version
        assert model is not None
        assert version is not None
        return Prediction(model.run_validated(inputs), version)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = trainable_family(NPC).train(TrainSettings(train_samples=4_000, epochs=2)).export()
    session = OnnxModel(model, FAMILIES[NPC].contract, prefer_gpu=False)
    plane = DataPlane({NPC: InlineBackend(NPC, session, "1")}, max_rows_per_request=1024)
    keys = Path(tempfile.mkdtemp(prefix="gameserve-guard-")) / "keys.json"
    store = KeyStore(keys)
    plain = store.create("game", ["infer"])
    # A rate no call reaches: the bucket's arithmetic on every call, never a 429.
    limited = store.create("bot", ["infer"], rate_per_s=1e9, burst=1_000_000)
    variants = {
        "auth off": (AuthSettings(mode="off"), []),
        "key": (AuthSettings(keys_file=keys), [(b"authorization", f"Bearer {plain}".encode())]),
        "key + rate limit": (
            AuthSettings(keys_file=keys),
            [(b"authorization", f"Bearer {limited}".encode())],
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):  # interleaved, so drift hits every variant alike
        for name, (auth, headers) in variants.items():
            app = create_app(plane, ServingSettings(auth=auth, ingress_replicas=1))
            results[name].append(asyncio.run(_per_call_us(app, headers, args.calls)))
    base = min(results["auth off"])
    print(f"{'variant':<20}{'µs/call (best of ' + str(args.rounds) + ')':>24}{'ratio':>8}")
    for name, runs in results.items():
        print(f"{name:<20}{min(runs):>24.1f}{min(runs) / base:>8.3f}")


if __name__ == "__main__":
    main()
