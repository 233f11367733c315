"""Drive a gRPC load with h2load (nghttp2's C load generator), as wrk drives HTTP.

A unary gRPC call is an HTTP/2 POST of one length-prefixed message, so h2load
sends a prepared ``ModelInferRequest`` over ``c`` connections, one call in
flight on each (where every ingress replica shares the port, the kernel spreads
connections, not calls). h2load sees HTTP statuses only, and gRPC answers an
error with status 200 and a ``grpc-status`` trailer: ``check`` makes the same
call once through grpcio first and refuses a load whose call does not succeed.
A Python generator was tried first: on 2 cores it used 1.5 cores itself and
measured the client.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb

from benchmarks.wrk import WrkResult

INFER = "/inference.GRPCInferenceService/ModelInfer"


def h2load_binary() -> str:
    found = shutil.which("h2load")
    if found is None:
        raise SystemExit("h2load is not installed: apt-get install -y nghttp2-client")
    return found


def check(address: str, body: bytes, metadata: dict[str, str]) -> None:
    """One call through grpcio: the load is only measured if it is answered."""
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(INFER)
        answer = call(body, metadata=tuple(metadata.items()), timeout=30)
    response = pb.ModelInferResponse.FromString(answer)
    if not response.raw_output_contents:
        raise SystemExit(f"{address}: ModelInfer answered no tensor: {response}")


def run(
    address: str,
    body: bytes,
    metadata: dict[str, str],
    connections: int,
    duration_s: float,
    timeout_s: float = 5.0,
) -> WrkResult:
    with tempfile.TemporaryDirectory(prefix="gameserve-h2load-") as tmp:
        data = Path(tmp) / "request.bin"
        data.write_bytes(struct.pack(">?I", False, len(body)) + body)  # uncompressed, length
        log = Path(tmp) / "requests.tsv"
        headers = {
            "content-type": "application/grpc",
            "te": "trailers",
            **metadata,
        }
        command = [
            h2load_binary(), f"http://{address}{INFER}", "-d", str(data),
            "-c", str(connections), "-m", "1", "-t", "1",
            "-D", f"{duration_s:g}", "-T", f"{timeout_s:g}", "--log-file", str(log),
        ]  # fmt: skip
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration_s + 30)
        rows = np.loadtxt(log, dtype=np.int64, ndmin=2) if log.stat().st_size else np.empty((0, 3))
    if not len(rows):
        return WrkResult(0.0, float("nan"), float("nan"), 0, 0)
    ok = rows[:, 1] == 200
    latency_ms = rows[ok, 2] / 1e3
    started = rows[:, 0] / 1e6
    span = max(float(started.max() - started.min()), 1e-9)
    return WrkResult(
        requests_per_s=float(ok.sum()) / span,
        p50_ms=float(np.percentile(latency_ms, 50)) if ok.any() else float("nan"),
        p99_ms=float(np.percentile(latency_ms, 99)) if ok.any() else float("nan"),
        requests=len(rows),
        bad=int((~ok).sum()),
    )
