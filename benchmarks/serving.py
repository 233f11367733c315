"""The serving path side by side, on the same ONNX model and request mix, in one run.

    .venv/bin/python -m benchmarks.serving [--duration 8]

Measures, in this order: ONNX Runtime in-process (the limit), a plain FastAPI
process calling ONNX Runtime (the baseline), then gameserve on a local Ray with
three substrates (Serve's proxy; Ray's throughput-optimized mode; HAProxy
ingress, see serving/runtime/substrate.py) and, on HAProxy, with one ingress replica
and with the default two: single-NPC JSON, a 128-NPC tick as JSON, and the
same tick as a binary v2 tensor. Load comes from wrk on loopback. Prints
req/s, NPC decisions/s, p50 and p99 and each figure's ratio to the baseline (or,
for tick batches, to ONNX Runtime's rows/s at that batch size), and writes the
table to benchmarks/results/. Then the peers (KServe's ModelServer, MLServer,
PyTriton; benchmarks/peers/, each in its own venv, installed on first use) on
the same model and the same v2 loads: single-NPC v2 JSON, the tick as v2 JSON,
and as binary v2 where the peer speaks it. gameserve answers the same v2 loads,
so every peer figure has a gameserve figure beside it. ``--no-peers`` skips them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import requests
import tritonclient.http as triton

from benchmarks import peers, wrk
from benchmarks.local_ray import local_ray, train_models
from models import FAMILIES
from models.runtime import OnnxModel
from pipelines.tracking_server import free_port
from serving.app.builder import SourceSpec
from serving.app.gateway import ServeGateway
from serving.http.keys import KeyStore
from serving.runtime.substrate import ServeRuntime
from serving.settings import AuthSettings, ServingSettings
from tests.payloads import npc_tick

NPC = "npc-behavior"
TICK = 128
RESULTS = Path(__file__).parent / "results"
JSON = {"Content-Type": "application/json"}


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
    for batch in (1, TICK):
        feeds = family.example_inputs(rows=batch)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            session.run_validated(feeds)
            calls += 1
        rates[batch] = calls * batch / (time.perf_counter() - started)
    return rates


def v2_body(rows: int) -> tuple[bytes, dict[str, str]]:
    observation = FAMILIES[NPC].example_inputs(rows=rows)["observation"]
    tensor = triton.InferInput("observation", list(observation.shape), "FP32")
    tensor.set_data_from_numpy(observation, binary_data=True)
    outputs = [triton.InferRequestedOutput("action_probs", binary_data=True)]
    body, header_length = triton.InferenceServerClient.generate_request_body(
        [tensor], outputs=outputs
    )
    headers = {"Content-Type": "application/octet-stream"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    return body, headers


def v2_json(rows: int) -> bytes:
    observation = FAMILIES[NPC].example_inputs(rows=rows)["observation"]
    tensor = {
        "name": "observation",
        "shape": list(observation.shape),
        "datatype": "FP32",
        "data": observation.ravel().tolist(),
    }
    return json.dumps({"inputs": [tensor]}).encode()


SINGLE = (1, 8, 16, 64)
KEY_FILE = "keys.json"
V2_PATH = f"/v2/models/{NPC}/infer"


def loads(
    game_api: bool = True, v2: bool = True, binary: bool = True, key: str | None = None
) -> dict[str, list[wrk.Load]]:
    """The request mix; each target gets the parts of it that it speaks.

    ``key``: gameserve's API key, sent with every request as a game server would.
    """
    mix: dict[str, list[wrk.Load]] = {}
    if game_api:
        single, tick = (json.dumps(npc_tick(n)).encode() for n in (1, TICK))
        mix["single JSON"] = [wrk.Load("/v1/npc/act", single, JSON, c) for c in SINGLE]
        mix[f"tick {TICK} JSON"] = [wrk.Load("/v1/npc/act", tick, JSON, 8, TICK)]
    if v2:
        mix["single v2 JSON"] = [wrk.Load(V2_PATH, v2_json(1), JSON, c) for c in SINGLE]
        mix[f"tick {TICK} v2 JSON"] = [wrk.Load(V2_PATH, v2_json(TICK), JSON, 8, TICK)]
    if binary:
        body, headers = v2_body(TICK)
        mix[f"tick {TICK} v2 binary"] = [wrk.Load(V2_PATH, body, headers, 8, TICK)]
    if key is None:
        return mix
    auth = {"Authorization": f"Bearer {key}"}
    return {
        name: [replace(load, headers={**load.headers, **auth}) for load in points]
        for name, points in mix.items()
    }


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
def plain_fastapi(model: Path) -> Iterator[str]:
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
        ]
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


FAST = "gameserve (defaults: HAProxy, 2 ingress)"
# Each gameserve target: the serving settings it changes from the defaults.
GAMESERVE: dict[str, dict[str, Any]] = {
    "gameserve, Serve proxy": {"runtime": ServeRuntime(haproxy_ingress=False)},
    "gameserve, throughput-opt": {
        "runtime": ServeRuntime(haproxy_ingress=False, throughput_optimized=True)
    },
    # One ingress replica: what one replica's event loop carries, next to two.
    "gameserve, HAProxy, 1 ingress": {
        "runtime": ServeRuntime(haproxy_ingress=True),
        "ingress_replicas": 1,
    },
    FAST: {"runtime": ServeRuntime(haproxy_ingress=True)},
    # What checking the API key, the rate and the limits costs per request, next to FAST.
    "gameserve, auth off": {
        "runtime": ServeRuntime(haproxy_ingress=True),
        "auth": AuthSettings(mode="off"),
    },
}


@contextlib.contextmanager
def gameserve(root: Path, key: str, overrides: dict[str, Any]) -> Iterator[str]:
    keyed = {"auth": AuthSettings(keys_file=root / KEY_FILE)}
    settings = ServingSettings(port=free_port(), **{**keyed, **overrides})
    with local_ray(settings.runtime) as dashboard:
        spec = SourceSpec(
            import_path="serving.dataplane.model_source:DirectoryModelSource",
            arguments={"root": str(root)},
        )
        gateway = ServeGateway(settings, spec, dashboard)
        gateway.deploy(dict.fromkeys(FAMILIES, "1"))
        wait_ready(gateway.url, key)
        yield gateway.url


def measure(
    target: str,
    url: str,
    mix: dict[str, list[wrk.Load]],
    duration_s: float,
    baselines: dict[tuple[str, int], float],
) -> list[Row]:
    rows = []
    for name, points in mix.items():
        for load in points:
            wrk.run(url, load, duration_s=2)  # warm-up: connections, batches, caches
            result = wrk.run(url, load, duration_s)
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


def summary(ours: list[Row], theirs: list[Row]) -> list[str]:
    """The issue's targets, then gameserve's fast path against each peer on the same load."""
    lines = []
    for target in GAMESERVE:
        single = {r.connections: r for r in ours if r.target == target and r.load == "single JSON"}
        tick = [r for r in ours if r.target == target and "tick" in r.load]
        lines.append(
            f"{target}: single NPC at c=16 {single[16].ratio:.2f}x plain FastAPI, "
            f"p99 {single[16].p99_ms:.1f} ms; c=64 vs c=8 "
            f"{single[64].requests_per_s / max(single[8].requests_per_s, 1):.2f}x; "
            + ", ".join(f"{r.load} {r.ratio:.2f}x ORT rows/s" for r in tick)
        )
    fast = {(r.load, r.connections): r for r in ours if r.target == FAST}
    for key in dict.fromkeys((r.load, r.connections) for r in theirs):
        mine = fast[key]
        against = ", ".join(
            f"{r.target} {r.requests_per_s:.0f} ({mine.requests_per_s / r.requests_per_s:.2f}x)"
            for r in theirs
            if (r.load, r.connections) == key and r.requests_per_s > 0
        )
        lines.append(f"{key[0]} c={key[1]}: {FAST} {mine.requests_per_s:.0f} req/s vs {against}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per load point")
    parser.add_argument("--no-peers", action="store_true", help="skip KServe, MLServer, PyTriton")
    args = parser.parse_args()
    wrk.wrk_binary()
    contenders = () if args.no_peers else peers.PEERS
    for peer in contenders:  # installs up front, so a failed install costs no measurement
        peers.ensure_venv(peer)
    root = Path(tempfile.mkdtemp(prefix="gameserve-bench-"))
    source = train_models(root)
    model_path = source.fetch(NPC, "1")

    raw = raw_onnx(model_path.read_bytes(), seconds=3)
    print(
        f"ONNX Runtime in-process, one thread: {raw[1]:,.0f} calls/s at batch 1, "
        f"{raw[TICK]:,.0f} rows/s at batch {TICK}"
    )
    print(HEADER)
    with plain_fastapi(model_path) as url:
        mix = loads(v2=False, binary=False)
        baseline = measure("plain FastAPI + ORT", url, mix, args.duration, {})
    reference = {(r.load, r.connections): r.requests_per_s for r in baseline}
    # A single decision over v2 is judged against the same baseline as over the game API;
    # tick batches against ONNX Runtime's own rows/s at that batch size.
    reference |= {("single v2 JSON", c): reference[("single JSON", c)] for c in SINGLE}
    reference |= {(name, 8): raw[TICK] for name in loads() if "tick" in name}
    key = KeyStore(root / KEY_FILE).create("benchmark", ["infer"])
    ours: list[Row] = []
    for target, overrides in GAMESERVE.items():
        with gameserve(root, key, overrides) as url:
            ours += measure(target, url, loads(key=key), args.duration, reference)
    theirs: list[Row] = []
    for peer in contenders:
        with peers.serve(peer, model_path, free_port()) as url:
            mix = loads(game_api=False, binary=peer.binary_v2)
            theirs += measure(peer.name, url, mix, args.duration, reference)

    lines = summary(ours, theirs)
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / time.strftime("serving-%Y%m%d-%H%M%S.txt")
    table = [format_row(r) for r in [*baseline, *ours, *theirs]]
    out.write_text(
        "\n".join(
            [
                f"ONNX Runtime in-process: {raw[1]:.0f} calls/s (batch 1), "
                f"{raw[TICK]:.0f} rows/s (batch {TICK})",
                HEADER,
                *table,
                "",
                *lines,
            ]
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
