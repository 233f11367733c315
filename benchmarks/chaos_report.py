"""``benchmarks/chaos.py``'s figures as a table, and its RSS samples as a picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.report import table


def report(figures: dict[str, Any]) -> str:
    sent = figures["sent"]
    requests = [
        ("sent", sent, "100%"),
        (
            "answered on time (fallbacks count)",
            figures["on_time"],
            f"{figures['availability']:.4%}",
        ),
        ("  of them by a fallback", figures["fallbacks"], _share(figures["fallbacks"], sent)),
        ("answered late (> deadline + 10 ms)", figures["late"], _share(figures["late"], sent)),
        (
            "  of them within 40 s of a stack restart",
            figures["late_within_40_s_of_a_restart"],
            _share(figures["late_within_40_s_of_a_restart"], sent),
        ),
    ]
    requests += [
        (f"failed: {code}", n, _share(n, sent)) for code, n in sorted(figures["failed"].items())
    ]
    rollouts = [
        (r["version"], r["kind"], f"{r['t_s']:.0f} s", r["decision"], r.get("runs", 0),
         r.get("reason", "")[:70])
        for r in figures["rollouts"]
    ]  # fmt: skip
    payloads = [
        ("offered", figures["payload_offered"]),
        ("written", figures["payload_written"]),
        ("dropped or failed, counted", figures["payload_dropped"]),
        ("unwritten (queued at a kill, or lost)", figures["payload_unwritten"]),
    ]
    rss = [
        (name, g["rss_mb_after_warmup"], g["rss_mb_at_end"], g["growth_pct_per_hour"])
        for name, g in sorted(figures["rss"].items())
    ]
    lines = [
        f"chaos: {figures['minutes']:g} minutes of faults after {figures['calm_minutes']:g} calm "
        f"minutes, seed {figures['seed']}",
        "",
        f"calm baseline (same load, no fault): {figures['calm_sent']} sent, "
        f"{figures['calm_availability']:.4%} answered on time",
        "",
        table(("requests", "count", "share"), requests),
        "",
        table(("fault", "injected"), sorted(figures["faults"].items())),
        "",
        table(("rollout", "kind", "started at", "decision", "runs", "reason"), rollouts),
        f"rollouts decided correctly: {figures['rollouts_correct']} of "
        f"{len(figures['rollouts'])}; stuck: {figures['rollouts_stuck']}",
        "",
        table(("payload rows", "count"), payloads),
        "",
        "new PIDs per name (faults, Serve's replacements, scale-ups): "
        + (", ".join(f"{n} {c}" for n, c in figures["restarts"].items()) or "none"),
        "",
        table(
            ("process (lived through the run)", "RSS after warm-up MB", "at end MB", "%/hour"), rss
        ),
        "",
        "faults in order: "
        + "; ".join(f"{t:.0f} s {fault}" for t, fault, _ in figures["fault_log"]),
    ]
    return "\n".join(lines) + "\n"


def _share(count: int, total: int) -> str:
    return f"{count / total:.3%}" if total else "-"


def plot_rss(figures: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(11, 6))
    for name, points in sorted(figures["rss_series"].items()):
        if len(points) < 3:
            continue
        axis.plot([t / 60 for t, _ in points], [rss for _, rss in points], label=name, lw=1)
    for t_s, _, _ in figures["fault_log"]:
        axis.axvline(t_s / 60, color="grey", lw=0.5, alpha=0.5)
    axis.set_xlabel("minutes (grey lines: faults)")
    axis.set_ylabel("RSS, MB")
    axis.set_title(f"gameserve processes under chaos, {figures['minutes']:g} minutes")
    axis.legend(fontsize=6, ncol=2, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
