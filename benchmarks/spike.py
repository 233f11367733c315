"""An e-sports spike: baseline → 10x → baseline, against the real stack on loopback.

    .venv/bin/python -m benchmarks.spike [--baseline-rps 10] [--multiplier 10] [--serve-proxy]

Starts a local Ray, deploys gameserve with queue-depth autoscaling on the NPC
family, and plays an open-loop load (arrivals do not wait for answers, as game
servers do not). Every second it records offered load, successes, shed and
failed requests, p50 and p99, requests in flight, NPC replicas and Ray nodes;
it writes a CSV and a PNG under benchmarks/results/ and prints time-to-scale-up
and p99 during and after the spike. Bounded: fixed phases, capped in-flight.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import ray
from ray import serve

from benchmarks.local_ray import local_ray, train_models
from models import FAMILIES
from pipelines.tracking_server import free_port
from serving.app.autoscaling import aggressive
from serving.app.builder import SourceSpec
from serving.app.gateway import ServeGateway
from serving.http.keys import KeyStore
from serving.runtime.substrate import ServeRuntime
from serving.settings import AuthSettings, FamilyServing, ServingSettings
from tests.payloads import npc_tick

NPC = "npc-behavior"
RESULTS = Path(__file__).parent / "results"
MAX_IN_FLIGHT = 1_000


@dataclass
class Second:
    offered: int = 0
    ok: int = 0
    shed: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    in_flight: int = 0
    replicas: int = 0
    ingress: int = 0
    nodes: int = 0


def deploy(dashboard: str, port: int) -> tuple[ServeGateway, str]:
    """The application, and an ``infer`` key for the load."""
    root = Path(tempfile.mkdtemp(prefix="gameserve-spike-"))
    train_models(root)
    key = KeyStore(root / "keys.json").create("spike", ["infer"])
    npc = FamilyServing(
        autoscaling=aggressive(
            min_replicas=1,
            max_replicas=4,
            latency_budget_ms=5.0,
            service_time_ms=2.5,
            scale_down_cooldown_s=15.0,
        )
    )
    families = {**ServingSettings().families, NPC: npc}
    # Under HTTP load requests queue in front of the ingress, so it scales too.
    ingress = aggressive(
        min_replicas=1,
        max_replicas=4,
        latency_budget_ms=20.0,
        service_time_ms=2.0,
        scale_down_cooldown_s=15.0,
    )
    settings = ServingSettings(
        port=port,
        families=families,
        ingress_autoscaling=ingress,
        auth=AuthSettings(keys_file=root / "keys.json"),
    )
    spec = SourceSpec(
        import_path="serving.dataplane.model_source:DirectoryModelSource",
        arguments={"root": str(root)},
    )
    gateway = ServeGateway(settings, spec, dashboard)
    gateway.deploy(dict.fromkeys(FAMILIES, "1"))
    return gateway, key


def replicas_and_nodes(app: str) -> tuple[int, int, int]:
    deployments = serve.status().applications[app].deployments

    def running(name: str) -> int:
        states = deployments[name].replica_states
        return sum(n for s, n in states.items() if str(s).endswith("RUNNING"))

    alive = [node for node in ray.nodes() if node["Alive"]]  # type: ignore[no-untyped-call]
    return running(NPC), running("ingress"), len(alive)


async def play(
    url: str, app: str, key: str, phases: list[tuple[str, float, float]]
) -> list[Second]:
    seconds = [Second() for _ in range(int(sum(d for _, d, _ in phases)) + 1)]
    in_flight = 0
    started = time.monotonic()
    body = npc_tick(8)

    async def one(session: aiohttp.ClientSession, slot: Second) -> None:
        nonlocal in_flight
        in_flight += 1
        sent = time.monotonic()
        try:
            async with session.post(f"{url}/v1/npc/act", json=body) as response:
                await response.read()
                if response.status == 200:
                    slot.ok += 1
                    slot.latencies_ms.append((time.monotonic() - sent) * 1000)
                elif response.status in (429, 503):
                    slot.shed += 1
                else:
                    slot.failed += 1
        except (aiohttp.ClientError, TimeoutError):
            slot.failed += 1
        finally:
            in_flight -= 1

    async def sample() -> None:
        loop = asyncio.get_running_loop()
        while True:
            index = int(time.monotonic() - started)
            if index >= len(seconds):
                return
            replicas, ingress, nodes = await loop.run_in_executor(None, replicas_and_nodes, app)
            slot = seconds[index]
            slot.replicas, slot.ingress, slot.nodes = replicas, ingress, nodes
            slot.in_flight = in_flight
            await asyncio.sleep(1.0)

    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    auth = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(timeout=timeout, connector=connector, headers=auth) as session:
        sampler = asyncio.create_task(sample())
        tasks: set[asyncio.Task[None]] = set()
        phase_start = 0.0
        for _, duration, rps in phases:
            interval, sent = 1.0 / rps, 0
            while (now := time.monotonic() - started) < phase_start + duration:
                due = phase_start + sent * interval
                if now < due:
                    await asyncio.sleep(due - now)
                    continue
                slot = seconds[int(now)]
                slot.offered += 1
                sent += 1
                if in_flight >= MAX_IN_FLIGHT:
                    slot.failed += 1  # the generator's own bound, counted, never exceeded
                    continue
                task = asyncio.create_task(one(session, slot))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            phase_start += duration
        await asyncio.gather(*tasks)
        await sampler
    return seconds


def report(seconds: list[Second], phases: list[tuple[str, float, float]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Under load a sample can take over a second; an unsampled second keeps the last one.
    for before, after in itertools.pairwise(seconds):
        if after.nodes == 0:
            after.replicas, after.ingress, after.nodes = (
                before.replicas,
                before.ingress,
                before.nodes,
            )
    rows: list[dict[str, object]] = []
    for t, s in enumerate(seconds):
        lat = np.asarray(s.latencies_ms)
        rows.append(
            {
                "second": t,
                "offered": s.offered,
                "ok": s.ok,
                "shed": s.shed,
                "failed": s.failed,
                "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else "",
                "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else "",
                "in_flight": s.in_flight,
                "replicas": s.replicas,
                "ingress": s.ingress,
                "nodes": s.nodes,
            }
        )
    with out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, phases, out.with_suffix(".png"))

    spike_start = phases[0][1]
    spike_end = spike_start + phases[1][1]
    scaling = [s.replicas + s.ingress for s in seconds]
    base_replicas = max(scaling[: int(spike_start)])
    scaled = [t for t, n in enumerate(scaling) if t >= spike_start and n > base_replicas]

    def p99(lo: float, hi: float) -> float:
        lat = [x for s in seconds[int(lo) : int(hi)] for x in s.latencies_ms]
        return float(np.percentile(lat, 99)) if lat else float("nan")

    total = sum(s.offered for s in seconds)
    print(
        f"requests offered: {total}, ok: {sum(s.ok for s in seconds)}, "
        f"shed (503/429): {sum(s.shed for s in seconds)}, failed: {sum(s.failed for s in seconds)}"
    )
    print(
        f"replicas (NPC + ingress): baseline {base_replicas}, peak {max(scaling)}, "
        f"end {scaling[-1]}; NPC peak {max(s.replicas for s in seconds)}, "
        f"ingress peak {max(s.ingress for s in seconds)}"
    )
    print(f"time to scale up: {scaled[0] - spike_start:.0f} s" if scaled else "no scale-up")
    print(
        f"p99 before spike: {p99(5, spike_start):.1f} ms, "
        f"during: {p99(spike_start, spike_end):.1f} ms, "
        f"after: {p99(spike_end + 10, len(seconds)):.1f} ms"
    )
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.png')}")


def plot(rows: list[dict[str, object]], phases: list[tuple[str, float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["second"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    axes[0].plot(t, [r["offered"] for r in rows], label="offered req/s")
    axes[0].plot(t, [r["ok"] for r in rows], label="ok req/s")
    axes[0].plot(t, [r["shed"] for r in rows], label="shed req/s")
    axes[1].plot(t, [r["p50_ms"] or np.nan for r in rows], label="p50 ms")
    axes[1].plot(t, [r["p99_ms"] or np.nan for r in rows], label="p99 ms")
    axes[2].step(t, [r["replicas"] for r in rows], label="NPC replicas", where="post")
    axes[2].step(t, [r["ingress"] for r in rows], label="ingress replicas", where="post")
    axes[2].step(t, [r["nodes"] for r in rows], label="Ray nodes", where="post")
    axes[2].plot(t, [r["in_flight"] for r in rows], label="in flight", alpha=0.6)
    edge = 0.0
    for name, duration, _ in phases:
        for ax in axes:
            ax.axvline(edge, color="grey", lw=0.5)
        axes[0].text(edge + 1, axes[0].get_ylim()[1] * 0.9, name, fontsize=8)
        edge += duration
    for ax in axes:
        ax.legend(loc="upper right", fontsize=8)
    axes[2].set_xlabel("seconds")
    fig.suptitle("gameserve: e-sports spike")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-rps", type=float, default=10.0)
    parser.add_argument("--multiplier", type=float, default=10.0)
    parser.add_argument("--baseline-s", type=float, default=20.0)
    parser.add_argument("--spike-s", type=float, default=40.0)
    parser.add_argument("--after-s", type=float, default=50.0)
    parser.add_argument(
        "--serve-proxy",
        action="store_true",
        help="Serve's own proxy instead of the default substrate (serving/runtime/substrate.py)",
    )
    args = parser.parse_args()
    phases = [
        ("baseline", args.baseline_s, args.baseline_rps),
        ("10x spike", args.spike_s, args.baseline_rps * args.multiplier),
        ("baseline", args.after_s, args.baseline_rps),
    ]
    runtime = ServeRuntime(haproxy_ingress=False) if args.serve_proxy else ServeRuntime()
    with local_ray(runtime) as dashboard:
        gateway, key = deploy(dashboard, free_port())
        seconds = asyncio.run(play(gateway.url, gateway.settings.app_name, key, phases))
        report(seconds, phases, RESULTS / time.strftime("spike-%Y%m%d-%H%M%S"))


if __name__ == "__main__":
    main()
