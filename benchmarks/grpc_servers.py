"""Three ways to serve unary gRPC from an asyncio replica, CPU per call measured side by side.

The replica's data plane lives on its event loop; what differs is who speaks
HTTP/2. Each server answers ``ModelInfer`` the same way (read the raw tensor,
build the response; no model), pinned to core 1 while h2load drives it from
core 0 (``benchmarks/grpc_load.py``), at c=1/16/64, in rounds:

- ``grpcio asyncio``: ``grpc.aio.server`` on the loop (gameserve until 2026-12);
- ``grpcio threads + loop``: ``grpc.server`` on a thread pool, each call's work
  handed to the loop with ``run_coroutine_threadsafe`` (gameserve now,
  ``serving/rpc/server.py``);
- ``grpclib``: pure-Python HTTP/2 (h2) on the loop itself, no poller thread;
  run only where ``grpclib`` is installed (it is not a gameserve dependency).

    .venv/bin/python -m benchmarks.grpc_servers [--seconds 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.util import find_spec
from typing import Any

import grpc
import numpy as np
import psutil  # type: ignore[import-untyped]
from tritonclient.grpc import service_pb2 as pb

from benchmarks import grpc_load
from serving.runtime.ports import free_port

SERVICE = "inference.GRPCInferenceService"
OUTPUT = np.zeros((1, 10), np.float32).tobytes()
KINDS = {"asyncio": "grpcio asyncio", "threads": "grpcio threads + loop", "grpclib": "grpclib"}


def _answer(request: Any) -> Any:
    _ = [np.frombuffer(raw, np.float32) for raw in request.raw_input_contents]
    tensor = pb.ModelInferResponse.InferOutputTensor(
        name="action_probs", datatype="FP32", shape=[1, 10]
    )
    return pb.ModelInferResponse(
        model_name=request.model_name, model_version="1", outputs=[tensor],
        raw_output_contents=[OUTPUT],
    )  # fmt: skip


def _handler(function: Any) -> grpc.GenericRpcHandler:
    method = grpc.unary_unary_rpc_method_handler(
        function,
        request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=lambda message: message.SerializeToString(),
    )
    return grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": method})


async def _asyncio_server(port: int) -> None:
    async def infer(request: Any, _: Any) -> Any:
        return _answer(request)

    server = grpc.aio.server(handlers=[_handler(infer)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def _threads_server(port: int) -> None:
    loop = asyncio.get_running_loop()

    async def work(request: Any) -> Any:
        return _answer(request)

    def infer(request: Any, _: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(work(request), loop).result(timeout=60)

    server = grpc.server(ThreadPoolExecutor(4), handlers=[_handler(infer)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def _grpclib_server(port: int) -> None:
    from grpclib.const import Cardinality, Handler
    from grpclib.server import Server

    class Service:
        async def infer(self, stream: Any) -> None:
            await stream.send_message(_answer(await stream.recv_message()))

        def __mapping__(self) -> dict[str, Handler]:
            path = f"/{SERVICE}/ModelInfer"
            kinds = (pb.ModelInferRequest, pb.ModelInferResponse)
            return {path: Handler(self.infer, Cardinality.UNARY_UNARY, *kinds)}

    server = Server([Service()])
    await server.start("127.0.0.1", port)
    print("ready", flush=True)
    await server.wait_closed()


def serve(kind: str, port: int) -> None:
    import uvloop  # as Ray Serve's replicas run

    servers = {"asyncio": _asyncio_server, "threads": _threads_server, "grpclib": _grpclib_server}
    uvloop.run(servers[kind](port))


def measure(kind: str, seconds: float, body: bytes) -> list[str]:
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.grpc_servers", "--serve", kind, str(port)]
    process = subprocess.Popen(["taskset", "-c", "1", *command], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise SystemExit(f"{kind}: the server did not start")
        server = psutil.Process(process.pid)
        rows = []
        for connections in (1, 16, 64):
            before = sum(server.cpu_times()[:2])
            result = grpc_load.run(f"127.0.0.1:{port}", body, {}, connections, seconds)
            cpu_s = sum(server.cpu_times()[:2]) - before
            calls = max(result.requests - result.bad, 1)
            rows.append(
                f"{KINDS[kind]:<24}{connections:>4}{result.requests_per_s:>10.0f}"
                f"{result.p99_ms:>10.2f}{cpu_s / calls * 1e6:>14.0f}{result.bad:>6}"
            )
        return rows
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    grpc_load.h2load_binary()
    kinds = [k for k in KINDS if k != "grpclib" or find_spec("grpclib") is not None]
    if "grpclib" not in kinds:
        print("grpclib is not installed: its rows are skipped (pip install grpclib)")
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="observation", datatype="FP32", shape=[1, 40]
    )
    body = pb.ModelInferRequest(
        model_name="npc-behavior", inputs=[tensor],
        raw_input_contents=[np.zeros((1, 40), np.float32).tobytes()],
    ).SerializeToString()  # fmt: skip
    print(f"{'server':<24}{'c':>4}{'calls/s':>10}{'p99 ms':>10}{'CPU µs/call':>14}{'bad':>6}")
    for round_ in range(1, args.rounds + 1):  # interleaved: drift hits every server alike
        print(f"round {round_} ({time.strftime('%H:%M:%S')})")
        for kind in kinds:
            print("\n".join(measure(kind, args.seconds, body)), flush=True)


if __name__ == "__main__":
    main()
