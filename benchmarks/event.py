"""The e-sports final three ways, on elastic emulated-accelerator nodes.

    .venv/bin/python -m benchmarks.event [--node-start-s 20] [--spike-s 60] [--days 3]

Each scenario runs the real stack (HAProxy ingress, the ingress replica, the
collector, the queue-depth policy, Ray's autoscaler) on a fake autoscaling
cluster whose GPU nodes hold one emulated accelerator each
(tests/cluster/emulated_accelerator.py), in a process of its own
(tests/cluster/event_scenario.py): baseline load at 30% of one node's
capacity, ten times that, the baseline again.

- announced: the final is in the event calendar, with a lead of a node's start
  and a replica's;
- learned: the same spike at the same time of earlier compressed days, learnt
  by the Holt-Winters forecast of the family's own request rate;
- reactive: queue depth alone.

Prints, per scenario, the measured day's offered requests, model answers,
fallbacks, refusals (with and without Retry-After), failures, NPC p99, replicas
when the spike starts, seconds from the spike's start until 90% of each second's
ticks get the model's answer (for 5 s running), peak nodes and node-minutes;
writes the records under benchmarks/results/ and one picture to
benchmarks/reference/event.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from tests.cluster.emulated_accelerator import EmulatedAccelerator
from tests.cluster.event_scenario import EventSpec, run_in_own_process, summary

RESULTS = Path(__file__).parent / "results"
REFERENCE = Path(__file__).parent / "reference"
COLUMNS = (
    "how", "offered", "model", "fallback", "refused", "refused_without_retry_after",
    "failed", "p99_ms", "late", "replicas_at_spike", "spike_replicas", "served_after_s",
    "clean_after_s", "peak_nodes", "node_minutes",
)  # fmt: skip


def plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(records), figsize=(5 * len(records), 8), sharex=True,
                             sharey="row", squeeze=False)  # fmt: skip
    for column, record in enumerate(records):
        spec = EventSpec.model_validate(record["spec"])
        seconds = record["seconds"]
        t = list(range(len(seconds)))
        top, middle, bottom = axes[0][column], axes[1][column], axes[2][column]
        top.plot(t, [s["offered"] for s in seconds], label="offered", color="grey")
        top.plot(t, [s["model"] for s in seconds], label="model answers")
        top.plot(t, [s["fallback"] for s in seconds], label="fallbacks")
        top.plot(t, [s["refused"] for s in seconds], label="refused (Retry-After)")
        top.set_title(spec.how)
        p99 = [
            sorted(s["latency_ms"])[int(0.99 * (len(s["latency_ms"]) - 1))]
            if s["latency_ms"] else float("nan")
            for s in seconds
        ]  # fmt: skip
        middle.plot(t, p99, label="NPC p99 ms")
        middle.axhline(spec.deadline_ms + 5, color="red", lw=0.7, label="deadline + 5 ms")
        replicas = [(s["replicas"] or [None])[0] for s in seconds]
        bottom.step(t, replicas, where="post", label="replicas running")
        bottom.step(t, [s["nodes"] for s in seconds], where="post", label="GPU nodes")
        for ax in (top, middle, bottom):
            for edge in (spec.baseline_s, spec.baseline_s + spec.spike_s):
                ax.axvline(edge, color="grey", lw=0.5)
        bottom.set_xlabel("seconds of the measured day")
    for ax in axes[:, 0]:
        ax.legend(loc="upper left", fontsize=7)
    axes[0][0].set_ylabel("requests/s")
    axes[1][0].set_ylabel("ms")
    axes[2][0].set_ylabel("count")
    fig.suptitle("gameserve: a 10x final on elastic emulated accelerators")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--node-start-s", type=float, default=20.0)
    parser.add_argument("--baseline-s", type=float, default=60.0)
    parser.add_argument("--spike-s", type=float, default=60.0)
    parser.add_argument("--after-s", type=float, default=40.0)
    parser.add_argument("--days", type=int, default=3, help="compressed days the forecast sees")
    parser.add_argument("--only", choices=("announced", "learned", "reactive"), nargs="*")
    args = parser.parse_args()
    accelerator = EmulatedAccelerator(node_start_s=args.node_start_s)
    records = []
    for how in args.only or ("announced", "learned", "reactive"):
        spec = EventSpec(
            how=how, accelerator=accelerator, baseline_s=args.baseline_s,
            spike_s=args.spike_s, after_s=args.after_s,
            days=args.days if how == "learned" else 1,
        )  # fmt: skip
        started = time.monotonic()
        record = run_in_own_process(spec, timeout_s=spec.day_s * spec.days + 900)
        records.append(record)
        print(f"{how}: ran in {time.monotonic() - started:.0f} s", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"event-{stamp}.json").write_text(json.dumps(records))
    spec = EventSpec.model_validate(records[0]["spec"])
    print(
        f"one node: {spec.replica_rps * spec.accelerators_per_node:.0f} ticks/s of {64} NPCs; "
        f"baseline {spec.baseline_rps:.0f}/s, spike {spec.baseline_rps * spec.multiplier:.0f}/s "
        f"for {spec.spike_s:g} s; node start {spec.accelerator.node_start_s:g} s; node limit "
        f"{spec.node_limit}; deadline {spec.deadline_ms:g} ms"
    )
    print(" | ".join(COLUMNS))
    for record in records:
        figures = summary(record)
        print(" | ".join(str(figures[column]) for column in COLUMNS))
    plot(records, REFERENCE / "event.png")
    print(f"wrote {REFERENCE / 'event.png'} and {RESULTS / f'event-{stamp}.json'}")


if __name__ == "__main__":
    main()
