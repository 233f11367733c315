"""The serving path side by side, on the same ONNX model and request mix, in one run.

    .venv/bin/python -m benchmarks.serving [--duration 8]

Measures, in this order: ONNX Runtime in-process (the limit), a plain FastAPI
process calling ONNX Runtime (the baseline), then gameserve on a local Ray with
three substrates (Serve's proxy; Ray's throughput-optimized mode; HAProxy
ingress, see serving/runtime/substrate.py) and, on HAProxy, with one ingress replica
and with the default two: single-NPC JSON, a 128-NPC tick as JSON, and the
same tick as a binary v2 tensor, a 1,024-NPC binary tick, and on the default
target OIP v2 over gRPC (single NPC at each concurrency, the 128- and 1,024-NPC
ticks as raw tensors). Load comes from wrk on loopback (gRPC: h2load, see
benchmarks/grpc_load.py). Prints
req/s, NPC decisions/s, p50 and p99 and each figure's ratio to the baseline (or,
for tick batches, to ONNX Runtime's rows/s at that batch size), and writes the
table to benchmarks/results/. Then the peers (KServe's ModelServer, MLServer,
PyTriton; benchmarks/peers/, each in its own venv, installed on first use) on
the same model and the same v2 loads: single-NPC v2 JSON, the tick as v2 JSON,
and as binary v2 where the peer speaks it, and the gRPC loads where the peer serves
gRPC on loopback (MLServer, PyTriton). gameserve answers the same loads, so every
peer figure has a gameserve figure beside it. ``--no-peers`` skips them. Last, the
steady-tail check: single NPC at c=16, the plain process, the same process run
with one uvicorn worker per core (a studio's simplest use of every core), and
gameserve in turn, ``--tail-runs`` times (3), each run judged against the
issue's targets.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from benchmarks import grpc_load, peers, wrk
from benchmarks.local_ray import local_ray, train_models
from benchmarks.serving_loads import (
    BIG_TICK,
    NPC,
    SINGLE,
    TICK,
    GrpcLoad,
    Point,
    loads,
    single_json,
)
from models import FAMILIES
from models.runtime import OnnxModel
from serving.app.builder import SourceSpec
from serving.app.gateway import ServeGateway
from serving.protocol.keys import KeyStore
from serving.runtime.haproxy_edge import plan_for
from serving.runtime.ports import free_port
from serving.runtime.substrate import ServeRuntime
from serving.settings import AuthSettings, GrpcSettings, ServingSettings
from tests.payloads import npc_tick

RESULTS = Path(__file__).parent / "results"
KEY_FILE = "keys.json"


@dataclass(frozen=True)
class Row:
    target: str
    load: str
    connections: int
    requests_per_s: float
    decisions_per_s: float
    p50_ms: float
    p99_ms: float
    bad: int
    baseline: float  # what the ratio is taken against, in the same unit

    @property
    def ratio(self) -> float:
        value = self.decisions_per_s if "tick" in self.load else self.requests_per_s
        return value / self.baseline if self.baseline else float("nan")


def raw_onnx(model: bytes, seconds: float) -> dict[int, float]:
    """Rows/s of one ONNX Runtime session, one thread, called in a loop."""
    family = FAMILIES[NPC]
    session = OnnxModel(model, family.contract, prefer_gpu=False)
    rates = {}
    for batch in (1, TICK, BIG_TICK):
        feeds = family.example_inputs(rows=batch)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            session.run_validated(feeds)
            calls += 1
        rates[batch] = calls * batch / (time.perf_counter() - started)
    return rates


def wait_ready(url: str, key: str | None = None, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            act = requests.post(url + "/v1/npc/act", json=npc_tick(1), headers=headers, timeout=2)
            if act.ok:
                return
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout_s:.0f} s")


@contextlib.contextmanager
def plain_fastapi(model: Path, workers: int = 1) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.plain_fastapi",
            "--model",
            str(model),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


# HAProxy in front of the 2 ingress replicas' own HTTP servers (ServeRuntime).
FAST = "gameserve (defaults)"
# Each gameserve target: the serving settings it changes from the defaults.
GAMESERVE: dict[str, dict[str, Any]] = {
    "gameserve, Serve proxy": {"runtime": ServeRuntime(haproxy_ingress=False)},
    "gameserve, throughput-opt": {
        "runtime": ServeRuntime(haproxy_ingress=False, throughput_optimized=True)
    },
    # One ingress replica: what one replica's event loop carries, next to two.
    # Ray starts its workers, Serve's replicas and HAProxy among them, at nice 15
    # (RAY_worker_niceness); gameserve starts them at 0 (ServeRuntime.worker_niceness).
    "gameserve, Ray's worker niceness 15": {
        "runtime": ServeRuntime(haproxy_ingress=True, worker_niceness=15)
    },
    "gameserve, HAProxy, 1 ingress": {
        "runtime": ServeRuntime(haproxy_ingress=True),
        "ingress_replicas": 1,
    },
    # HAProxy in front of Serve's per-replica HTTP servers, through Serve's per-request
    # wrapper: the default before the replicas served HTTP themselves
    # (serving/http/listener.py; benchmarks/http_floor.py has the floor of each path).
    "gameserve, Serve's replica HTTP": {
        "runtime": ServeRuntime(haproxy_ingress=True, replica_http_port=None)
    },
    FAST: {"runtime": ServeRuntime(haproxy_ingress=True)},
    # What checking the API key, the rate and the limits costs per request, next to FAST.
    "gameserve, auth off": {
        "runtime": ServeRuntime(haproxy_ingress=True),
        "auth": AuthSettings(mode="off"),
    },
}


@dataclass(frozen=True)
class Served:
    url: str
    grpc_address: str | None = None


@contextlib.contextmanager
def gameserve(root: Path, key: str, overrides: dict[str, Any]) -> Iterator[Served]:
    keyed = {"auth": AuthSettings(keys_file=root / KEY_FILE)}
    settings = ServingSettings(
        port=free_port(), **{"grpc": GrpcSettings(port=free_port()), **keyed, **overrides}
    )
    settings = settings.model_copy(update={"runtime": settings.runtime.with_free_replica_port()})
    with local_ray(settings.runtime, edge=plan_for(settings)) as dashboard:
        spec = SourceSpec(
            import_path="serving.dataplane.model_source:DirectoryModelSource",
            arguments={"root": str(root)},
        )
        gateway = ServeGateway(settings, spec, dashboard)
        gateway.deploy(dict.fromkeys(FAMILIES, "1"))
        wait_ready(gateway.url, key)
        yield Served(gateway.url, gateway.grpc_address)


def run_point(served: Served, load: Point, duration_s: float) -> wrk.WrkResult:
    if isinstance(load, GrpcLoad):
        assert served.grpc_address is not None
        return grpc_load.run(
            served.grpc_address, load.body, load.metadata, load.connections, duration_s
        )
    return wrk.run(served.url, load, duration_s)


def measure(
    target: str,
    served: Served,
    mix: dict[str, list[Point]],
    duration_s: float,
    baselines: dict[tuple[str, int], float],
) -> list[Row]:
    rows = []
    for name, points in mix.items():
        for load in points:
            if isinstance(load, GrpcLoad):
                assert served.grpc_address is not None
                grpc_load.check(served.grpc_address, load.body, load.metadata)
            run_point(served, load, duration_s=2)  # warm-up: connections, batches, caches
            result = run_point(served, load, duration_s)
            decisions = result.requests_per_s * load.rows_per_request
            row = Row(
                target,
                name,
                load.connections,
                result.requests_per_s,
                decisions,
                result.p50_ms,
                result.p99_ms,
                result.bad,
                baselines.get((name, load.connections), 0.0),
            )
            print(format_row(row), flush=True)
            rows.append(row)
    return rows


HEADER = (
    f"{'target':<42}{'load':<22}{'c':>4}{'req/s':>10}{'NPC/s':>11}"
    f"{'p50 ms':>9}{'p99 ms':>9}{'bad':>6}{'ratio':>8}"
)


def format_row(row: Row) -> str:
    return (
        f"{row.target:<42}{row.load:<22}{row.connections:>4}{row.requests_per_s:>10.0f}"
        f"{row.decisions_per_s:>11.0f}{row.p50_ms:>9.2f}{row.p99_ms:>9.2f}{row.bad:>6}"
        f"{row.ratio:>8.2f}"
    )


PER_CORE = f"plain FastAPI, {os.cpu_count()} workers"


def summary(ours: list[Row], theirs: list[Row], tail: list[tuple[Row, Row, Row]]) -> list[str]:
    """Each target's figures, the issue's targets, then the default path against each peer."""
    lines = []
    for target in dict.fromkeys(r.target for r in ours):
        single = {r.connections: r for r in ours if r.target == target and r.load == "single JSON"}
        tick = [r for r in ours if r.target == target and "tick" in r.load]
        lines.append(
            f"{target}: single NPC at c=16 {single[16].ratio:.2f}x plain FastAPI, "
            f"p99 {single[16].p99_ms:.1f} ms; c=64 vs c=8 "
            f"{single[64].requests_per_s / max(single[8].requests_per_s, 1):.2f}x; "
            + ", ".join(f"{r.load} {r.ratio:.2f}x ORT rows/s" for r in tick)
        )
    fast = {(r.load, r.connections): r for r in ours if r.target == FAST}
    met = [o.ratio >= 1.1 and o.p99_ms <= 15.0 for _, _, o in tail]
    runs = "; ".join(f"{o.ratio:.2f}x, p99 {o.p99_ms:.1f} ms" for _, _, o in tail)
    lines.append(
        f"TARGET single NPC at c=16 >= 1.1x plain FastAPI with p99 <= 15 ms: "
        f"{sum(met)} of {len(met)} runs ({runs})"
    )
    # Against the per-core process run just before it, in the same round.
    per_core = [(o.requests_per_s / max(w.requests_per_s, 1), o.p99_ms) for _, w, o in tail]
    met = [ratio >= 0.9 and p99 <= 15.0 for ratio, p99 in per_core]
    runs = "; ".join(f"{ratio:.2f}x, p99 {p99:.1f} ms" for ratio, p99 in per_core)
    lines.append(
        f"TARGET single NPC at c=16 >= 0.9x {PER_CORE} with p99 <= 15 ms: "
        f"{sum(met)} of {len(met)} runs ({runs})"
    )
    big = fast.get((f"tick {BIG_TICK} v2 binary", 8))
    if big is not None:
        verdict = "met" if big.ratio >= 0.5 else "missed"
        lines.append(
            f"TARGET {BIG_TICK}-NPC binary tick >= 0.5x ONNX Runtime rows/s: "
            f"{big.ratio:.2f}x ({verdict})"
        )
    behind = []
    for key in dict.fromkeys((r.load, r.connections) for r in theirs):
        mine = fast[key]
        against = ", ".join(
            f"{r.target} {r.requests_per_s:.0f} ({mine.requests_per_s / r.requests_per_s:.2f}x)"
            for r in theirs
            if (r.load, r.connections) == key and r.requests_per_s > 0
        )
        behind += [
            f"{r.target} on {key[0]} c={key[1]}"
            for r in theirs
            if (r.load, r.connections) == key and r.requests_per_s > mine.requests_per_s
        ]
        lines.append(f"{key[0]} c={key[1]}: {FAST} {mine.requests_per_s:.0f} req/s vs {against}")
    if theirs:
        lines.append(
            "TARGET ahead of every peer on every load: "
            + ("met" if not behind else "behind " + "; ".join(behind))
        )
    return lines


def steady_tail(
    plain: Served, per_core: Served, ours: Served, key: str, runs: int, duration_s: float
) -> list[tuple[Row, Row, Row]]:
    """Single NPC at c=16: the plain process, the per-core one, then gameserve, ``runs``
    times in turn; each gameserve run is judged against the two runs just before it."""
    point = single_json(16)
    rounds = []
    for run in range(1, runs + 1):
        (base,) = measure(f"tail {run}: plain FastAPI", plain, point, duration_s, {})
        reference = {("single JSON", 16): base.requests_per_s}
        (wide,) = measure(f"tail {run}: {PER_CORE}", per_core, point, duration_s, reference)
        keyed = loads(v2=False, binary=False, key=key)["single JSON"]
        mix: dict[str, list[Point]] = {"single JSON": [p for p in keyed if p.connections == 16]}
        (mine,) = measure(f"tail {run}: gameserve (defaults)", ours, mix, duration_s, reference)
        rounds.append((base, wide, mine))
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per load point")
    parser.add_argument("--no-peers", action="store_true", help="skip KServe, MLServer, PyTriton")
    parser.add_argument("--tail-runs", type=int, default=3, help="runs of the c=16 tail check")
    parser.add_argument(
        "--defaults-only", action="store_true", help="gameserve on its defaults only"
    )
    args = parser.parse_args()
    wrk.wrk_binary()
    grpc_load.h2load_binary()
    contenders = () if args.no_peers else peers.PEERS
    for peer in contenders:  # installs up front, so a failed install costs no measurement
        peers.ensure_venv(peer)
    root = Path(tempfile.mkdtemp(prefix="gameserve-bench-"))
    source = train_models(root)
    model_path = source.fetch(NPC, "1")

    raw = raw_onnx(model_path.read_bytes(), seconds=3)
    ort_line = (
        f"ONNX Runtime in-process, one thread: {raw[1]:,.0f} calls/s at batch 1, "
        + ", ".join(f"{raw[b]:,.0f} rows/s at batch {b}" for b in (TICK, BIG_TICK))
    )
    print(ort_line)
    print(HEADER)
    targets = {
        name: overrides
        for name, overrides in GAMESERVE.items()
        if name == FAST or not args.defaults_only
    }
    with (
        plain_fastapi(model_path) as url,
        plain_fastapi(model_path, workers=os.cpu_count() or 1) as wide_url,
    ):
        plain = Served(url)
        per_core = Served(wide_url)
        baseline = measure(
            "plain FastAPI + ORT", plain, loads(v2=False, binary=False), args.duration, {}
        )
        reference = {(r.load, r.connections): r.requests_per_s for r in baseline}
        baseline += measure(
            PER_CORE, per_core, loads(v2=False, binary=False), args.duration, reference
        )
        # A single decision over v2 or gRPC is judged against the same baseline as over
        # the game API; tick batches against ONNX Runtime's own rows/s at that batch size.
        for name in ("single v2 JSON", "single gRPC"):
            reference |= {(name, c): reference[("single JSON", c)] for c in SINGLE}
        for name, points in loads(grpc=True).items():
            reference |= {
                (name, p.connections): raw[p.rows_per_request] for p in points if "tick" in name
            }
        key = KeyStore(root / KEY_FILE).create("benchmark", ["infer"])
        ours: list[Row] = []
        tail: list[tuple[Row, Row, Row]] = []
        for target, overrides in targets.items():
            with gameserve(root, key, overrides) as served:
                mix = loads(grpc=target == FAST, key=key)
                ours += measure(target, served, mix, args.duration, reference)
                if target == FAST:
                    tail = steady_tail(plain, per_core, served, key, args.tail_runs, args.duration)
    theirs: list[Row] = []
    for peer in contenders:
        grpc_port = free_port() if peer.grpc else None
        with peers.serve(peer, model_path, free_port(), grpc_port) as url:
            served = Served(url, None if grpc_port is None else f"127.0.0.1:{grpc_port}")
            mix = loads(game_api=False, binary=peer.binary_v2, grpc=peer.grpc)
            theirs += measure(peer.name, served, mix, args.duration, reference)

    lines = summary(ours, theirs, tail)
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / time.strftime("serving-%Y%m%d-%H%M%S.txt")
    rows = [*baseline, *ours, *(row for trio in tail for row in trio), *theirs]
    out.write_text("\n".join([ort_line, HEADER, *map(format_row, rows), "", *lines]) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
