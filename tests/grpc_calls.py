"""NPC ticks over OIP v2 gRPC from a few threads until stopped: load that runs across
a replica change (a redeploy, a scale-down) and counts what failed."""

from __future__ import annotations

import threading
import time

import tritonclient.grpc as triton_grpc

from gameserve_client import grpc_channel_args
from models import trainable_family

NPC = "npc-behavior"


class GrpcCalls:
    """``threads`` callers through the client options gameserve_client gives, each on
    a new connection every ``calls_per_connection`` calls (the kernel picks a
    replica per connection), for 60 s at most."""

    def __init__(
        self,
        address: str,
        key: str,
        *,
        threads: int = 4,
        calls_per_connection: int = 100,
        deadline_ms: int = 5000,
    ) -> None:
        self.address, self.calls_per_connection = address, calls_per_connection
        self.metadata = {"authorization": f"Bearer {key}", "x-deadline-ms": str(deadline_ms)}
        self.answered = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._call) for _ in range(threads)]

    def _call(self) -> None:
        tensor = triton_grpc.InferInput("observation", [4, 40], "FP32")
        tensor.set_data_from_numpy(trainable_family(NPC).example_inputs(rows=4)["observation"][:4])
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            with triton_grpc.InferenceServerClient(
                self.address, channel_args=grpc_channel_args()
            ) as client:
                for _ in range(self.calls_per_connection):
                    try:
                        client.infer(NPC, [tensor], headers=self.metadata)
                        self.answered += 1
                    except triton_grpc.InferenceServerException as exc:
                        self.failures.append(str(exc)[:300])

    def __enter__(self) -> GrpcCalls:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
