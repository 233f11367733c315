"""Overload: a mixed game load offered open-loop at 1x, 3x and 10x of the stack's capacity.

    .venv/bin/python -m benchmarks.overload [--seconds 30] [--levels 1 3 10] [--workers 2]

Starts a local Ray and the application as the stack runs it (HAProxy ingress,
two ingress replicas, models in the ingress), measures its capacity for the
mix closed-loop, then offers the mix open-loop (arrivals do not wait for
answers, as game servers do not) at each multiple of it. The mix, by
requests: 70% NPC ticks (16 NPCs, critical, 20 ms deadline), 10% difficulty
(normal, 50 ms), 20% personalization (50 candidates, best effort, 100 ms).

Per class and level it prints what was offered, answered by the model, by the
fallback, shed (503), errors, p50/p99 at the client and, for NPCs, answers
later than deadline + 5 ms; and writes a table and a PNG under
benchmarks/results/. The generator runs in ``--workers`` processes on the
same machine as the stack: where it cannot offer a level's rate, the
"offered/s" column says what it did offer. Bounded: fixed phases, a cap on
requests in flight per worker, a 2 s timeout per request (an error).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

from benchmarks.local_ray import train_models
from benchmarks.serving import KEY_FILE, gameserve
from serving.http.keys import KeyStore
from tests.payloads import difficulty_request, npc_tick, rank_request

RESULTS = Path(__file__).parent / "results"
# (class, path, share of requests, deadline the family declares)
MIX = (
    ("npc (critical)", "/v1/npc/act", 0.7, 20.0),
    ("difficulty (normal)", "/v1/difficulty/recommend", 0.1, 50.0),
    ("personalization (best effort)", "/v1/personalization/rank", 0.2, 100.0),
)
# Encoded once: the generator shares the machine's two cores with the stack.
BODIES = tuple(
    json.dumps(body).encode() for body in (npc_tick(16), difficulty_request(1), rank_request(50))
)
# How capacity is measured: every request patient and critical, so every answer
# is the model's and the figure is what the stack computes, not what it sheds.
PATIENT = {"X-Deadline-Ms": "10000", "X-Priority": "critical"}
MAX_IN_FLIGHT = 2_000  # per worker
LATE_MARGIN_MS = 5.0
CAPACITY_STEP_S = 4.0


@dataclass
class Outcomes:
    """One class at one level: counts and client-side latencies of answered requests."""

    offered: int = 0
    model: int = 0
    fallback: int = 0
    shed: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, other: Outcomes) -> None:
        self.offered += other.offered
        self.model += other.model
        self.fallback += other.fallback
        self.shed += other.shed
        self.errors += other.errors
        self.latencies_ms += other.latencies_ms


def _classes(n: int, seed: int) -> np.ndarray:
    shares = [share for _, _, share, _ in MIX]
    return np.random.default_rng(seed).choice(len(MIX), size=n, p=shares)


async def _play(
    url: str, key: str, rate: float | None, seconds: float, seed: int, connections: int
) -> list[Outcomes]:
    """Open-loop at ``rate`` req/s; closed-loop over ``connections`` when ``rate`` is None."""
    outcomes = [Outcomes() for _ in MIX]
    kinds = _classes(2_000_000, seed)
    in_flight = 0

    async def one(session: aiohttp.ClientSession, kind: int) -> None:
        nonlocal in_flight
        slot = outcomes[kind]
        in_flight += 1
        sent = time.perf_counter()
        try:
            async with session.post(url + MIX[kind][1], data=BODIES[kind]) as response:
                body = await response.read()
            if response.status == 200:
                slot.latencies_ms.append((time.perf_counter() - sent) * 1000)
                if b'"source":"fallback"' in body:
                    slot.fallback += 1
                else:
                    slot.model += 1
            elif response.status in (429, 503):
                slot.shed += 1
            else:
                slot.errors += 1
        except (aiohttp.ClientError, TimeoutError):
            slot.errors += 1
        finally:
            in_flight -= 1

    timeout = aiohttp.ClientTimeout(total=2)
    connector = aiohttp.TCPConnector(limit=connections)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if rate is None:
        headers |= PATIENT
    async with aiohttp.ClientSession(timeout=timeout, connector=connector, headers=headers) as s:
        started = time.perf_counter()
        tasks: set[asyncio.Task[None]] = set()
        index = 0
        if rate is None:

            async def closed() -> None:
                nonlocal index
                while time.perf_counter() - started < seconds:
                    kind = int(kinds[index % len(kinds)])
                    index += 1
                    outcomes[kind].offered += 1
                    await one(s, kind)

            await asyncio.gather(*(closed() for _ in range(connections)))
            return outcomes
        interval = 1.0 / rate
        while (now := time.perf_counter() - started) < seconds:
            due = index * interval
            if now < due:
                await asyncio.sleep(due - now)
                continue
            kind = int(kinds[index % len(kinds)])
            index += 1
            outcomes[kind].offered += 1
            if in_flight >= MAX_IN_FLIGHT:
                outcomes[kind].errors += 1  # the generator's bound: counted, never exceeded
                continue
            task = asyncio.create_task(one(s, kind))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return outcomes


def _worker(
    url: str, key: str, rate: float | None, seconds: float, seed: int, connections: int
) -> list[Outcomes]:
    return asyncio.run(_play(url, key, rate, seconds, seed, connections))


def play(
    url: str, key: str, rate: float | None, seconds: float, workers: int, connections: int
) -> list[Outcomes]:
    """The load from ``workers`` processes, merged per class."""
    per_worker = None if rate is None else rate / workers
    with ProcessPoolExecutor(workers) as pool:
        futures = [
            pool.submit(_worker, url, key, per_worker, seconds, seed, connections)
            for seed in range(workers)
        ]
        results = [f.result() for f in futures]
    merged = [Outcomes() for _ in MIX]
    for result in results:
        for total, part in zip(merged, result, strict=True):
            total.add(part)
    return merged


HEADER = (
    f"{'level':>6} {'class':<31}{'offered/s':>10}{'model':>8}{'fallback':>9}{'shed':>8}"
    f"{'errors':>7}{'p50 ms':>8}{'p99 ms':>8}{'late':>6}"
)


def rows(level: str, outcomes: list[Outcomes], seconds: float) -> list[str]:
    lines = []
    for (name, _, _, deadline), o in zip(MIX, outcomes, strict=True):
        lat = np.asarray(o.latencies_ms)
        p50 = f"{np.percentile(lat, 50):.1f}" if lat.size else "-"
        p99 = f"{np.percentile(lat, 99):.1f}" if lat.size else "-"
        late = int((lat > deadline + LATE_MARGIN_MS).sum()) if lat.size else 0
        lines.append(
            f"{level:>6} {name:<31}{o.offered / seconds:>10.0f}{o.model:>8}{o.fallback:>9}"
            f"{o.shed:>8}{o.errors:>7}{p50:>8}{p99:>8}{late:>6}"
        )
    return lines


def plot(levels: list[tuple[str, list[Outcomes]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(MIX), figsize=(13, 4), sharey=True)
    colors = {"model": "#2b8a3e", "fallback": "#f08c00", "shed": "#868e96", "errors": "#c92a2a"}
    for column, (axis, (name, *_)) in enumerate(zip(axes, MIX, strict=True)):
        bottom = np.zeros(len(levels))
        for kind, color in colors.items():
            shares = np.asarray(
                [getattr(o[column], kind) / max(o[column].offered, 1) for _, o in levels]
            )
            axis.bar([label for label, _ in levels], shares, bottom=bottom, color=color, label=kind)
            bottom += shares
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("offered load (x capacity)")
    axes[0].set_ylabel("share of requests")
    axes[-1].legend(loc="lower right", fontsize=8)
    fig.suptitle("gameserve under overload: who answered each class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def sustainable(url: str, key: str, saturated: float, workers: int) -> float:
    """The highest open-loop rate at which the model answers 99% of every class, NPCs
    within their deadline at p99: searched upward from a fifth of the saturated
    throughput. Open-loop at the saturated rate itself is a queue that only grows."""
    rate, passed = saturated / 5, saturated / 10
    while rate < saturated * 1.5:
        outcomes = play(url, key, rate, CAPACITY_STEP_S, workers, MAX_IN_FLIGHT)
        npc = np.asarray(outcomes[0].latencies_ms)
        in_time = npc.size > 0 and np.percentile(npc, 99) <= MIX[0][3]
        by_model = all(o.model >= 0.99 * o.offered for o in outcomes)
        print(f"  {rate:,.0f} req/s: {'holds' if in_time and by_model else 'does not hold'}")
        if not (in_time and by_model):
            break
        passed, rate = rate, rate * 1.25
        time.sleep(2)
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="per level")
    parser.add_argument("--levels", type=float, nargs="+", default=[1.0, 3.0, 10.0])
    parser.add_argument("--workers", type=int, default=2, help="generator processes")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gameserve-overload-"))
    train_models(root)
    key = KeyStore(root / KEY_FILE).create("overload", ["infer"])
    # The stack's defaults: HAProxy ingress, two ingress replicas, models in the ingress.
    with gameserve(root, key, {}) as served:
        url = served.url
        play(url, key, None, 3, args.workers, 16)  # warm-up
        measured = play(url, key, None, 10, args.workers, 16)
        saturated = sum(o.model for o in measured) / 10
        print(f"throughput for the mix, closed-loop over {args.workers * 16} connections, "
              f"patient and critical: {saturated:,.0f} model answers/s")  # fmt: skip
        capacity = sustainable(url, key, saturated, args.workers)
        print(f"capacity (the highest open-loop rate answered by the model in time): "
              f"{capacity:,.0f} req/s")  # fmt: skip
        print(HEADER, flush=True)
        levels: list[tuple[str, list[Outcomes]]] = []
        lines = []
        for level in args.levels:
            outcomes = play(url, key, capacity * level, args.seconds, args.workers, MAX_IN_FLIGHT)
            label = f"{level:g}x"
            levels.append((label, outcomes))
            table = rows(label, outcomes, args.seconds)
            lines += table
            print("\n".join(table), flush=True)
            time.sleep(3)  # the stack drains before the next level
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / time.strftime("overload-%Y%m%d-%H%M%S")
    out.with_suffix(".txt").write_text(
        f"saturated throughput for the mix (closed-loop, patient, critical): {saturated:.0f} "
        f"req/s; capacity (open-loop, answered by the model in time): {capacity:.0f} req/s; "
        f"{args.seconds:g} s per level; late = answers after their family's deadline + "
        f"{LATE_MARGIN_MS:g} ms\n{HEADER}\n" + "\n".join(lines) + "\n"
    )
    plot(levels, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.txt')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
