"""gameserve's gRPC loads beside PyTriton's, alternating rounds on the same model in one run.

The full serving benchmark (``benchmarks/serving.py``) measures every load
and every peer; this is its gRPC part alone against PyTriton (the peer that
led on single-NPC gRPC at c=64), short enough to rerun after a change to the
gRPC server. PyTriton's venv is built on first use (``benchmarks/peers``).

    .venv/bin/python -m benchmarks.grpc_peers [--rounds 2] [--duration 4]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks import grpc_load, peers
from benchmarks.local_ray import train_models
from benchmarks.serving import HEADER, KEY_FILE, Served, gameserve, measure
from benchmarks.serving_loads import NPC, loads
from serving.protocol.keys import KeyStore
from serving.runtime.ports import free_port

PYTRITON = next(peer for peer in peers.PEERS if peer.name == "PyTriton")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per load point")
    args = parser.parse_args()
    grpc_load.h2load_binary()
    peers.ensure_venv(PYTRITON)
    root = Path(tempfile.mkdtemp(prefix="gameserve-grpc-peers-"))
    model = train_models(root).fetch(NPC, "1")
    key = KeyStore(root / KEY_FILE).create("benchmark", ["infer"])
    print(HEADER, flush=True)
    for round_ in range(1, args.rounds + 1):
        with gameserve(root, key, {}) as served:
            mix = loads(game_api=False, v2=False, binary=False, grpc=True, key=key)
            measure(f"{round_}: gameserve (defaults)", served, mix, args.duration, {})
        grpc_port = free_port()
        with peers.serve(PYTRITON, model, free_port(), grpc_port) as url:
            peer = Served(url, f"127.0.0.1:{grpc_port}")
            mix = loads(game_api=False, v2=False, binary=False, grpc=True)
            measure(f"{round_}: PyTriton", peer, mix, args.duration, {})  # prints its rows


if __name__ == "__main__":
    main()
