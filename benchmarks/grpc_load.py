"""Drive a gRPC load the way wrk drives HTTP: c connections, one call in flight on each.

    python -m benchmarks.grpc_load --address 127.0.0.1:8001 --body request.bin \\
        --connections 16 --duration 6 [--metadata authorization='Bearer ...']

Each connection is a channel of its own (a local subchannel pool, so its own
TCP connection: where every ingress replica shares the port, the kernel spreads
connections, not calls). The request is serialized once and sent as bytes, so
the client does no protobuf work per call; it runs in a process of its own, so
it never shares a GIL with what drives the benchmark. Prints one JSON line with
the same figures as ``benchmarks/wrk.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from benchmarks.wrk import WrkResult

INFER = "/inference.GRPCInferenceService/ModelInfer"


async def _drive(
    address: str,
    body: bytes,
    metadata: tuple[tuple[str, str], ...],
    connections: int,
    duration_s: float,
    timeout_s: float,
) -> dict[str, float]:
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", -1)]
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(connections)]
    latencies: list[float] = []
    bad = 0
    stop_at = time.perf_counter() + duration_s

    async def worker(channel: grpc.aio.Channel) -> None:
        nonlocal bad
        call = channel.unary_unary(INFER)  # no serializers: bytes in, bytes out
        while (started := time.perf_counter()) < stop_at:
            try:
                await call(body, metadata=metadata, timeout=timeout_s)
            except grpc.aio.AioRpcError:
                bad += 1
                continue
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(channel.channel_ready() for channel in channels))
    began = time.perf_counter()
    await asyncio.gather(*(worker(channel) for channel in channels))
    elapsed = time.perf_counter() - began
    await asyncio.gather(*(channel.close() for channel in channels))
    done = np.asarray(latencies) * 1e3
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(done, 50)) if len(done) else float("nan"),
        "p99_ms": float(np.percentile(done, 99)) if len(done) else float("nan"),
        "requests": len(latencies) + bad,
        "bad": bad,
    }


def run(
    address: str,
    body: bytes,
    metadata: dict[str, str],
    connections: int,
    duration_s: float,
    timeout_s: float = 5.0,
) -> WrkResult:
    """One load point, in a process of its own."""
    with tempfile.TemporaryDirectory(prefix="gameserve-grpc-") as tmp:
        path = Path(tmp) / "request.bin"
        path.write_bytes(body)
        command = [
            sys.executable, "-m", "benchmarks.grpc_load", "--address", address,
            "--body", str(path), "--connections", str(connections),
            "--duration", str(duration_s), "--timeout", str(timeout_s),
        ]  # fmt: skip
        for key, value in metadata.items():
            command += ["--metadata", f"{key}={value}"]
        completed = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=duration_s + 60
        )
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    return WrkResult(**figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--body", type=Path, required=True, help="a serialized ModelInferRequest")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--metadata", action="append", default=[], help="key=value")
    args = parser.parse_args()
    metadata = tuple(tuple(item.split("=", 1)) for item in args.metadata)
    figures = asyncio.run(
        _drive(
            args.address,
            args.body.read_bytes(),
            metadata,
            args.connections,
            args.duration,
            args.timeout,
        )
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
