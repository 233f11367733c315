"""Overload: the game mix offered open-loop at 1x, 3x and 10x of the stack's capacity.

    .venv/bin/python -m benchmarks.overload [--seconds 30] [--levels 1 3 10]

The stack (Ray, HAProxy ingress with gameserve's edge rules, two ingress
replicas, models in the ingress) runs on core 1 alone; the generator, h2load
(benchmarks/h2load.py), on core 0 alone, and its own CPU is reported. Capacity
is the mix's closed-loop throughput with patient, critical requests (every
answer the model's): "1x saturation". The mix, by requests: 70% NPC ticks (16
NPCs, critical, 20 ms), 10% difficulty (normal, 50 ms), 20% personalization
(50 candidates, best effort, 100 ms), each with its family's own deadline.

Per level and class it prints what was offered and what came back: model
answers and fallbacks (the server's counters), refusals (503 ``use_local``)
within 5 ms and later, other failures, p50/p99 of answers, and the share of
calls answered within deadline + 5 ms or refused within 5 ms. Then a recovery
run at 1x, and one family flooded: personalization over v2 at 10x its own
capacity beside single-NPC calls. It writes a table and a picture of the 10x
run (per class and second: answers, refusals, latency) under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

from benchmarks import h2load
from benchmarks.local_ray import train_models
from benchmarks.serving import KEY_FILE, gameserve
from models import get_family
from serving.protocol.keys import KeyStore
from serving.settings import ServingSettings
from tests.payloads import difficulty_request, npc_tick, rank_request

RESULTS = Path(__file__).parent / "results"
STACK_CORE, GENERATOR_CORE = 1, 0
MARGIN_MS = 5.0
# (name, family, path, share of requests, the family's deadline, body)
MIX = (
    ("npc", "npc-behavior", "/v1/npc/act", 0.7, 20.0, npc_tick(16)),
    ("difficulty", "difficulty-tuning", "/v1/difficulty/recommend", 0.1, 50.0,
     difficulty_request(1)),
    ("personalization", "personalization", "/v1/personalization/rank", 0.2, 100.0,
     rank_request(50)),
)  # fmt: skip
PATIENT = {"X-Deadline-Ms": "10000", "X-Priority": "critical"}
# Capacity is measured closed-loop over 4 + 1 + 1 connections: enough to keep the one
# core busy, few enough that nothing waits in HAProxy's queue, so none is refused (a
# closed loop that ignored Retry-After would spend the core on refusals instead).


def _streams(key: str, rate: float | None, patient: bool = False) -> list[h2load.Stream]:
    headers = {"authorization": f"Bearer {key}", **(PATIENT if patient else {})}
    return [
        h2load.Stream(
            name, path, json.dumps(body).encode(), headers,
            None if rate is None else rate * share, connections=max(1, round(share * 6)),
        )
        for name, _, path, share, _, body in MIX
    ]  # fmt: skip


def _counters(url: str, key: str) -> dict[str, dict[str, Any]]:
    listed = requests.get(
        url + "/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=30
    ).json()
    return {m["name"]: m["game_time"] for m in listed["models"]}


def _delta(before: dict[str, Any], after: dict[str, Any], family: str) -> dict[str, int]:
    """What the server counted for ``family`` between two readings."""

    def total(counts: dict[str, Any], name: str) -> int:
        value = counts[family][name]
        return int(sum(value.values()) if isinstance(value, dict) else value)

    names = ("fallbacks", "late", "spent_on_arrival", "shed", "expired")
    return {name: total(after, name) - total(before, name) for name in names}


def _summary(
    log: h2load.Log, deadline_ms: float, counted: dict[str, int], seconds: float
) -> dict[str, Any]:
    ok = log.status == 200
    refused = log.status == 503
    fast = refused & (log.latency_ms <= MARGIN_MS)
    answered_ms = log.latency_ms[ok]
    in_time = ok & (log.latency_ms <= deadline_ms + MARGIN_MS)
    missing = max(log.offered - len(log.status), 0)  # never answered within the run
    failed = int((~ok & ~refused).sum()) + missing
    calls = max(log.offered, len(log.status))
    return {
        "offered_s": log.offered / seconds,
        "model": int(ok.sum()) - counted["fallbacks"],
        "fallback": counted["fallbacks"],
        "server": counted,
        "refused_fast": int(fast.sum()),
        "refused_slow": int((refused & ~fast).sum()),
        "failed": failed,
        "p50": float(np.percentile(answered_ms, 50)) if answered_ms.size else float("nan"),
        "p99": float(np.percentile(answered_ms, 99)) if answered_ms.size else float("nan"),
        "p99_all": float(np.percentile(log.latency_ms, 99)) if log.status.size else float("nan"),
        "on_time": (int(in_time.sum()) + int(fast.sum())) / calls if calls else float("nan"),
        # whatever came back (answer or refusal), back within the deadline + 5 ms
        "in_budget": int((log.latency_ms <= deadline_ms + MARGIN_MS).sum()) / calls
        if calls
        else float("nan"),
    }


HEADER = (
    f"{'level':>8} {'class':<16}{'offered/s':>10}{'model':>8}{'fallback':>9}{'refused':>8}"
    f"{'>5ms':>6}{'failed':>7}{'p50 ms':>8}{'p99 ms':>8}{'p99 all':>8}{'on time':>9}"
    f"{'in budget':>10}"
)


def _rows(level: str, summaries: dict[str, dict[str, Any]]) -> list[str]:
    return [
        f"{level:>8} {name:<16}{s['offered_s']:>10.0f}{s['model']:>8}{s['fallback']:>9}"
        f"{s['refused_fast']:>8}{s['refused_slow']:>6}{s['failed']:>7}{s['p50']:>8.1f}"
        f"{s['p99']:>8.1f}{s['p99_all']:>8.1f}{s['on_time'] * 100:>8.2f}%"
        f"{s['in_budget'] * 100:>9.2f}%"
        for name, s in summaries.items()
    ]


def level(
    url: str, key: str, streams: list[h2load.Stream], seconds: float, deadlines: dict[str, float]
) -> tuple[h2load.Run, dict[str, dict[str, Any]]]:
    before = _counters(url, key)
    run = h2load.run(url, streams, seconds, GENERATOR_CORE)
    time.sleep(3)  # replicas ship their counts to the collector every second or so
    after = _counters(url, key)
    families = {name: family for name, family, *_ in MIX} | {
        "npc-single": "npc-behavior",
        "personalization-v2": "personalization",
    }
    summaries = {
        name: _summary(
            log, deadlines[name], _delta(before, after, families.get(name, name)), seconds
        )
        for name, log in run.logs.items()
    }
    return run, summaries


def _v2_body(family: str, rows: int) -> bytes:
    inputs = get_family(family).example_inputs(rows=rows)
    return json.dumps(
        {
            "inputs": [
                {"name": n, "shape": list(a.shape), "datatype": "FP32",
                 "data": a.reshape(-1).tolist()}
                for n, a in inputs.items()
            ]
        }
    ).encode()  # fmt: skip


def flood(url: str, key: str, npc_rate: float, seconds: float) -> list[str]:
    """Personalization over v2 at 10x its own capacity, beside single-NPC calls."""
    auth = {"authorization": f"Bearer {key}"}
    v2 = h2load.Stream("personalization-v2", "/v2/models/personalization/infer",
                       _v2_body("personalization", 1), auth, None, connections=8)  # fmt: skip
    alone = h2load.run(url, [v2], 5, GENERATOR_CORE).logs[v2.name]
    capacity = (alone.status == 200).sum() / 5
    flooded = h2load.Stream(v2.name, v2.path, v2.body, v2.headers, capacity * 10)
    single = h2load.Stream(
        "npc-single", "/v1/npc/act", json.dumps(npc_tick(1)).encode(),
        {**auth, "X-Deadline-Ms": "20"}, npc_rate,
    )  # fmt: skip
    _, summaries = level(url, key, [flooded, single], seconds, {"npc-single": 20.0, v2.name: 100.0})
    return [f"personalization v2 alone, closed-loop: {capacity:,.0f} answers/s; flooded at "
            f"10x that beside single NPC calls (X-Deadline-Ms: 20) at {npc_rate:,.0f}/s:",
            *_rows("flood", summaries)]  # fmt: skip


def _pin_haproxy(core: int) -> list[int]:
    """Every HAProxy process (the stack's; Ray starts it) onto ``core``; their PIDs."""
    moved = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == "haproxy":
                os.sched_setaffinity(int(proc.name), {core})
                moved.append(int(proc.name))
        except (OSError, ProcessLookupError):
            continue
    return moved


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit():
                status = (proc / "status").read_text()
                parents[int(proc.name)] = int(status.split("PPid:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _pin_control(core: int) -> list[str]:
    """Every process of the stack but HAProxy and the replicas (Ray's GCS, raylet,
    dashboard, Serve's controller, this driver) onto ``core``: what the serving core
    does when the control plane is elsewhere, as on a cluster's head node."""
    moved = []
    for pid in [os.getpid(), *_descendants(os.getpid())]:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            if comm == "haproxy" or "ServeReplica" in title:
                continue
            os.sched_setaffinity(pid, {core})
            moved.append(comm)
        except (OSError, ProcessLookupError):
            continue
    return moved


def plot(run: h2load.Run, deadlines: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(run.logs), figsize=(14, 6.5), sharex=True)
    start = min(float(log.start_s.min()) for log in run.logs.values() if log.start_s.size)
    for column, (name, log) in enumerate(run.logs.items()):
        second = (log.start_s - start).astype(int)
        bins = np.arange(int(run.seconds) + 2)
        for label, mask, color in (
            ("answered", log.status == 200, "#2b8a3e"),
            ("refused (use_local)", log.status == 503, "#868e96"),
            ("failed", (log.status != 200) & (log.status != 503), "#c92a2a"),
        ):
            counts = np.bincount(second[mask], minlength=len(bins))[: len(bins)]
            axes[0][column].plot(bins, counts, label=label, color=color)
        axes[0][column].set_title(f"{name} (deadline {deadlines[name]:g} ms)", fontsize=10)
        ok = log.status == 200
        for q, style in ((50, ":"), (99, "-")):
            series = [
                np.percentile(log.latency_ms[ok & (second == s)], q)
                if (ok & (second == s)).any() else np.nan
                for s in bins
            ]  # fmt: skip
            axes[1][column].plot(bins, series, style, color="#1c7ed6", label=f"p{q} answered")
        axes[1][column].axhline(deadlines[name] + MARGIN_MS, color="#c92a2a", lw=0.8,
                                label="deadline + 5 ms")  # fmt: skip
        axes[1][column].set_xlabel("second of the run")
    axes[0][0].set_ylabel("requests per second")
    axes[1][0].set_ylabel("client latency (ms)")
    axes[0][-1].legend(fontsize=8)
    axes[1][-1].legend(fontsize=8)
    fig.suptitle("gameserve at 10x capacity: stack on one core, h2load on the other")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="per level")
    parser.add_argument("--levels", type=float, nargs="+", default=[1.0, 3.0, 10.0])
    parser.add_argument("--runtime", type=json.loads, default={},
                        help="serving.runtime overrides, as JSON")  # fmt: skip
    parser.add_argument("--game-time", type=json.loads, default={},
                        help="serving.game_time overrides, as JSON")  # fmt: skip
    parser.add_argument("--serving", type=json.loads, default={},
                        help="other serving settings, as JSON: e.g. one ingress replica, "
                        '\'{"ingress_autoscaling": null, "ingress_replicas": 1}\'')  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="h2load's own summaries")
    parser.add_argument(
        "--edge-core", type=int, default=None,
        help="move HAProxy to this core (with h2load), leaving the stack's core to the "
        "replicas: the edge on CPU of its own, as on a cluster's head node",
    )  # fmt: skip
    parser.add_argument(
        "--control-core", type=int, default=None,
        help="move Ray's control processes (GCS, raylet, dashboard, Serve's controller) "
        "and this driver to this core (with h2load), leaving the stack's core to HAProxy "
        "and the replicas: what they do without the control plane beside them",
    )  # fmt: skip
    args = parser.parse_args()
    h2load.binary()
    root = Path(tempfile.mkdtemp(prefix="gameserve-overload-"))
    train_models(root)
    key = KeyStore(root / KEY_FILE).create("overload", ["admin"])
    deadlines = {name: deadline for name, _, _, _, deadline, _ in MIX}
    h2load.pinned_to(STACK_CORE)  # Ray and everything it starts inherit this core
    lines: list[str] = []
    defaults = ServingSettings()
    overrides: dict[str, Any] = dict(args.serving)
    if args.runtime:
        overrides["runtime"] = defaults.runtime.model_copy(update=args.runtime)
    if args.game_time:
        overrides["game_time"] = defaults.game_time.model_copy(update=args.game_time)
    with gameserve(root, key, overrides) as served:
        url = served.url
        if args.edge_core is not None:
            lines.append(f"HAProxy moved to core {args.edge_core}: {_pin_haproxy(args.edge_core)}")
        if args.control_core is not None:
            moved = _pin_control(args.control_core)
            lines.append(f"control plane moved to core {args.control_core}: {len(moved)} "
                         f"processes ({', '.join(sorted(set(moved)))})")  # fmt: skip
            print(lines[-1], flush=True)
        h2load.run(url, _streams(key, None, patient=True), 3, GENERATOR_CORE)  # warm-up
        saturated = h2load.run(url, _streams(key, None, patient=True), 10, GENERATOR_CORE)
        capacity = sum(int((log.status == 200).sum()) for log in saturated.logs.values()) / 10
        lines.append(
            f"capacity (1x): {capacity:,.0f} requests/s of the mix, closed-loop, patient and "
            f"critical; stack on core {STACK_CORE}, h2load on core {GENERATOR_CORE}"
        )
        print(lines[-1], "\n" + HEADER, flush=True)
        npc_model: dict[float, float] = {}
        for multiple in [*args.levels, 1.0]:
            label = "recovery" if len(npc_model) == len(args.levels) else f"{multiple:g}x"
            seconds = 10.0 if label == "recovery" else args.seconds
            run, summaries = level(url, key, _streams(key, capacity * multiple), seconds, deadlines)
            npc_model.setdefault(multiple, summaries["npc"]["model"] / seconds)
            table = _rows(label, summaries)
            generator = f"{'':>8} h2load CPU: {run.generator_cpu_s / seconds * 100:.0f}% of a core"
            lines += [*table, generator]
            print("\n".join([*table, generator]), flush=True)
            if args.verbose:
                print("\n".join(f"{'':>8} {n}: {log.summary}" for n, log in run.logs.items()))
                print(
                    "\n".join(f"{'':>8} {n} (server): {s['server']}" for n, s in summaries.items())
                )
            if multiple == max(args.levels) and label != "recovery":
                RESULTS.mkdir(parents=True, exist_ok=True)
                picture = RESULTS / time.strftime("overload-%Y%m%d-%H%M%S.png")
                plot(run, deadlines, picture)
            time.sleep(3)
        top = max(args.levels)
        kept = npc_model[top] / npc_model[1.0] * 100
        lines.append(f"NPC model answers/s at {top:g}x: {npc_model[top]:,.0f}, at 1x: "
                     f"{npc_model[1.0]:,.0f} ({kept:.0f}%)")  # fmt: skip
        print(lines[-1], flush=True)
        npc_single_rate = capacity * 0.7 / 2  # single-NPC calls at half the rate NPC ticks saturate
        lines += flood(url, key, npc_single_rate, args.seconds)
        print("\n".join(lines[-3:]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / time.strftime("overload-%Y%m%d-%H%M%S.txt")
    out.write_text(
        f"{HEADER}\n" + "\n".join(lines) + f"\n(on time: answered within deadline + "
        f"{MARGIN_MS:g} ms or refused within {MARGIN_MS:g} ms; in budget: answered or refused "
        f"within deadline + {MARGIN_MS:g} ms; >5ms: refusals slower than 5 ms)\n"
    )
    print(f"wrote {out} and the 10x picture beside it")


if __name__ == "__main__":
    main()
