"""An e-sports spike: baseline → 10x → baseline, against the real stack on loopback.

    .venv/bin/python -m benchmarks.spike [--ray-cpus 4] [--baseline-share 0.3] [--serve-proxy]

Starts a local Ray and deploys gameserve on its default settings (the ingress
follows its queue: two replicas at least, one per CPU Ray sees at most). It
first measures what the stack serves (closed loop, ``--probe-s``), then plays an
open-loop load (arrivals do not wait for answers, as game servers do not) at
``--baseline-share`` of that capacity, ten times that for the spike (3x what
the machine serves by default), and the baseline again, long enough for the
scale-down cooldowns. Every second it records offered load, successes, shed and
failed requests, p50 and p99, requests in flight, replicas and Ray nodes; it
writes a CSV and a PNG under benchmarks/results/ and prints the capacity,
time-to-scale-up, the replica peak, when replicas came back down, and p99
before, during and after the spike. Bounded: fixed phases, capped in-flight.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import os
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
from serving.app.builder import SourceSpec
from serving.app.gateway import ServeGateway
from serving.protocol.keys import KeyStore
from serving.runtime.haproxy_edge import plan_for
from serving.runtime.ports import free_port
from serving.runtime.substrate import ServeRuntime
from serving.settings import AuthSettings, FamilyServing, ServingSettings
from tests.payloads import npc_tick

NPC = "npc-behavior"
NPC_DEADLINE_MS = 20.0  # the family's; the load sends no X-Deadline-Ms
RESULTS = Path(__file__).parent / "results"
MAX_IN_FLIGHT = 1_000


@dataclass
class Second:
    offered: int = 0
    ok: int = 0
    shed: int = 0
    failed: int = 0
    unsent: int = 0  # the generator's own in-flight bound, never the server's doing
    latencies_ms: list[float] = field(default_factory=list)
    shed_ms: list[float] = field(default_factory=list)  # how long each refusal took
    in_flight: int = 0
    replicas: int = 0
    ingress: int = 0
    nodes: int = 0


def deploy_settings(
    root: Path,
    port: int,
    runtime: ServeRuntime,
    families: dict[str, FamilyServing] | None = None,
) -> tuple[ServingSettings, SourceSpec, str]:
    """Default settings on ``runtime`` (the local Ray's; ``families`` overriding), the
    models trained under ``root``, and an ``infer`` key for the load."""
    key = KeyStore(root / "keys.json").create(f"bench-{port}", ["infer"])
    auth = AuthSettings(keys_file=root / "keys.json")
    settings = ServingSettings(port=port, auth=auth, runtime=runtime)
    if families:
        settings = settings.model_copy(update={"families": {**settings.families, **families}})
    spec = SourceSpec(
        import_path="serving.dataplane.model_source:DirectoryModelSource",
        arguments={"root": str(root)},
    )
    return settings, spec, key


def deploy(dashboard: str, port: int, runtime: ServeRuntime) -> tuple[ServeGateway, str]:
    """The application on its default settings, and an ``infer`` key for the load."""
    root = Path(tempfile.mkdtemp(prefix="gameserve-spike-"))
    train_models(root)
    settings, spec, key = deploy_settings(root, port, runtime)
    gateway = ServeGateway(settings, spec, dashboard)
    gateway.deploy(dict.fromkeys(FAMILIES, "1"))
    return gateway, key


async def capacity(url: str, key: str, seconds: float, concurrency: int = 64) -> float:
    """Answers per second the stack gives a closed loop of ``concurrency`` callers."""
    body, answered = npc_tick(8), 0
    deadline = time.monotonic() + seconds
    auth = {"Authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(headers=auth, timeout=timeout) as session:

        async def caller() -> None:
            nonlocal answered
            while time.monotonic() < deadline:
                async with session.post(f"{url}/v1/npc/act", json=body) as response:
                    await response.read()
                    answered += response.status == 200

        started = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return answered / (time.monotonic() - started)


def settle(app: str, minimum: int, max_s: float) -> float:
    """Seconds until the ingress has ``minimum`` replicas in any state, none starting
    or stopping (at most ``max_s``)."""
    started = time.monotonic()
    time.sleep(5.0)  # the policy's last look-back window ends after the load
    while time.monotonic() - started < max_s:
        states = serve.status().applications[app].deployments["ingress"].replica_states
        if sum(states.values()) <= minimum:
            break
        time.sleep(1.0)
    return time.monotonic() - started


def replicas_and_nodes(app: str) -> tuple[int, int, int]:
    deployments = serve.status().applications[app].deployments

    def running(name: str) -> int:
        states = deployments[name].replica_states
        return sum(n for s, n in states.items() if str(s).endswith("RUNNING"))

    alive = [node for node in ray.nodes() if node["Alive"]]  # type: ignore[no-untyped-call]
    npc = running(NPC) if NPC in deployments else 0  # in the ingress by default
    return npc, running("ingress"), len(alive)


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
                    slot.shed_ms.append((time.monotonic() - sent) * 1000)
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
                    slot.unsent += 1  # the generator's own bound, counted, never exceeded
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
                "unsent": s.unsent,
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
    ok, shed, failed = (sum(getattr(s, k) for s in seconds) for k in ("ok", "shed", "failed"))
    print(
        f"requests offered: {total}, ok: {ok}, shed (503/429): {shed}, failed: {failed}, "
        f"not sent (generator at {MAX_IN_FLIGHT} in flight): {sum(s.unsent for s in seconds)}"
    )
    print(
        f"replicas (NPC + ingress): baseline {base_replicas}, peak {max(scaling)}, "
        f"end {scaling[-1]}; NPC peak {max(s.replicas for s in seconds)}, "
        f"ingress peak {max(s.ingress for s in seconds)}"
    )
    print(f"time to scale up: {scaled[0] - spike_start:.0f} s" if scaled else "no scale-up")
    back = [t for t, n in enumerate(scaling) if t >= spike_end and n <= base_replicas]
    print(
        f"back to {base_replicas} replicas {back[0] - spike_end:.0f} s after the spike"
        if back
        else f"still {scaling[-1]} replicas {len(seconds) - spike_end:.0f} s after the spike"
    )
    answered = [x for s in seconds for x in s.latencies_ms]
    late = sum(x > NPC_DEADLINE_MS + 5 for x in answered)
    refusals = [x for s in seconds for x in s.shed_ms]
    print(
        f"answered after the deadline + 5 ms ({NPC_DEADLINE_MS + 5:g} ms): {late} of "
        f"{len(answered)}; refusals within 5 ms: {sum(x <= 5 for x in refusals)} of "
        f"{len(refusals)}, within {NPC_DEADLINE_MS + 5:g} ms: "
        f"{sum(x <= NPC_DEADLINE_MS + 5 for x in refusals)}"
    )
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
    axes[2].set_ylabel("replicas, nodes")
    flight = axes[2].twinx()  # hundreds in flight would flatten the replica steps
    flight.plot(t, [r["in_flight"] for r in rows], label="in flight", alpha=0.4, color="grey")
    flight.set_ylabel("in flight")
    flight.legend(loc="upper left", fontsize=8)
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
    parser.add_argument(
        "--ray-cpus", type=int, default=4,
        help="CPUs Ray sees: the ingress's ceiling. Above the cores, the added replicas "
        "show the policy's moves without adding compute.",
    )  # fmt: skip
    parser.add_argument("--baseline-share", type=float, default=0.3)
    parser.add_argument("--multiplier", type=float, default=10.0)
    parser.add_argument("--probe-s", type=float, default=10.0)
    parser.add_argument("--baseline-s", type=float, default=20.0)
    parser.add_argument("--spike-s", type=float, default=40.0)
    parser.add_argument("--after-s", type=float, default=90.0)
    parser.add_argument(
        "--serve-proxy",
        action="store_true",
        help="Serve's own proxy instead of the default substrate (serving/runtime/substrate.py)",
    )
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false",
        help="share both cores between the stack and this generator (the stack on core 1 "
        "and the generator on core 0 by default)",
    )  # fmt: skip
    args = parser.parse_args()
    runtime = ServeRuntime(haproxy_ingress=False) if args.serve_proxy else ServeRuntime()
    runtime = runtime.with_free_replica_port()
    if args.pin:  # Ray and all it starts on core 1; this generator on core 0
        os.sched_setaffinity(0, {1})
    edge = plan_for(ServingSettings(runtime=runtime))
    with local_ray(runtime, num_cpus=args.ray_cpus, edge=edge) as dashboard:
        if args.pin:
            os.sched_setaffinity(0, {0})
        gateway, key = deploy(dashboard, free_port(), runtime)
        served = asyncio.run(capacity(gateway.url, key, args.probe_s))
        baseline = served * args.baseline_share
        print(f"capacity: {served:.0f} req/s (closed loop, 64 callers); baseline {baseline:.0f}")
        # The probe scaled the ingress up: the baseline starts from the floor again.
        waited = settle(gateway.settings.app_name, minimum=2, max_s=150)
        print(f"after the probe, back to the floor in {waited:.0f} s")
        phases = [
            ("baseline", args.baseline_s, baseline),
            (f"{args.multiplier:g}x spike", args.spike_s, baseline * args.multiplier),
            ("baseline", args.after_s, baseline),
        ]
        seconds = asyncio.run(play(gateway.url, gateway.settings.app_name, key, phases))
        report(seconds, phases, RESULTS / time.strftime("spike-%Y%m%d-%H%M%S"))


if __name__ == "__main__":
    main()
