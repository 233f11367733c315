"""Faults at random under steady mixed load, through the real stack, for as long as asked.

    python -m benchmarks.chaos --minutes 60 --seed 7

``gameserve up --detach`` on a fresh data dir; four client threads send mixed
game traffic (NPC ticks, difficulty, personalization; ``gameserve_client``, as
a game server would); a scheduler injects faults at random times from the
seed, and starts a rollout every few minutes, alternating good, poisoned
(NaN for wounded NPCs) and slow challengers. Counted at the client (sent,
failed by code, answered late), in MLflow (rollouts started, decided, decided
correctly, stuck), in the payload ledgers (offered, written, dropped, lost),
and by sampling the RSS of every stack process. Figures go to stdout, and with
``--out`` to a reference table and an RSS plot beside it.

Faults: an ingress replica SIGKILLed, Serve's controller SIGKILLed, MLflow
SIGKILLed (the stack restarts it), ``gameserve up`` SIGKILLed and started
again (serving outlives it; the new stack reattaches and resumes rollouts).
Not here: a node's loss (``tests/cluster/test_multinode.py``), a full disk
and a slow MLflow; a family replica of its own (the local stack serves every
family inside the ingress replicas, so the ingress kill is that fault).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.chaos_parts import (
    FAULTS,
    Challengers,
    MixedLoad,
    ProcessSampler,
    stack_processes,
)
from pipelines.registry import connect_to_stack
from pipelines.settings import Settings
from serving.dataplane.payload_files import ledgers
from serving.runtime.ports import free_port

GAMESERVE = shutil.which("gameserve", path=str(Path(sys.executable).parent)) or "gameserve"
NPC = "npc-behavior"
# Short steps, a behaviour gate left open (small models of different seeds differ
# more than a tuned gate allows): what is judged is safety under faults.
PLAN = {
    "steps": [
        {"name": "shadow", "weight": 0.0, "shadow": 1.0, "bake_s": 10.0},
        {"name": "25%", "weight": 0.25, "bake_s": 10.0},
        {"name": "100%", "weight": 1.0, "bake_s": 10.0},
    ],
    "thresholds": {
        "min_requests": 30, "min_latency_samples": 100, "max_p99_ratio": 2.0,
        "p99_slack_ms": 25.0, "max_divergence": 1.0,
    },
    "preflight": {"enabled": False},
}  # fmt: skip
EXPECTED = {"good": "promoted", "poisoned": "rolled_back", "slow": "rolled_back"}


@dataclass
class Stack:
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {
            **os.environ,
            "GAMESERVE_DATA_DIR": str(self.data_dir),
            "GAMESERVE_TRACKING__PORT": str(free_port()),
            "GAMESERVE_SERVING__PORT": str(free_port()),
            "GAMESERVE_SERVING__GRPC__PORT": str(free_port()),
            "GAMESERVE_SERVING__RUNTIME__REPLICA_HTTP_PORT": str(free_port()),
            "GAMESERVE_RAY__DASHBOARD_PORT": str(free_port()),
            "GAMESERVE_SERVING__ADMIN__PORT": str(free_port()),
            "GAMESERVE_TRAIN__TRAIN_SAMPLES": "3000",
            "GAMESERVE_TRAIN__EPOCHS": "2",
            "GAMESERVE_TRAIN__EVAL_SAMPLES": "500",
            "GAMESERVE_ROLLOUT__FAMILIES": json.dumps({NPC: PLAN}),
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['GAMESERVE_SERVING__PORT']}"

    def run(self, *args: str, timeout_s: float = 600) -> str:
        done = subprocess.run(
            [GAMESERVE, *args], env=self.env, capture_output=True, text=True,
            timeout=timeout_s, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"gameserve {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def pid(self) -> int:
        return int(json.loads((self.data_dir / "stack.json").read_text())["pid"])

    def key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()


class Chaos:
    def __init__(self, args: argparse.Namespace, data_dir: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.stack = Stack(data_dir)
        self.faults: Counter[str] = Counter()
        self.fault_log: list[tuple[float, str, str]] = []
        self.rollouts: list[dict[str, Any]] = []
        self.started = 0.0

    def now_s(self) -> float:
        return time.monotonic() - self.started

    def run(self) -> dict[str, Any]:
        stack = self.stack
        stack.run("up", "--detach")
        registry = connect_to_stack(Settings(data_dir=stack.data_dir))
        # Trained before the clock starts: training on these two cores is not a fault.
        slots = int(self.args.minutes * 60 // self.args.rollout_every_s) + 1
        pool = Challengers(registry, seed=self.args.seed).pool(slots)
        sampler = ProcessSampler(stack.data_dir, every_s=10.0)
        self.started = time.monotonic()
        end = self.started + (self.args.calm_minutes + self.args.minutes) * 60
        calm = (
            self.started + self.args.calm_minutes * 60
        )  # the same load with no fault: the baseline
        next_fault = calm + self.rng.expovariate(1 / self.args.fault_every_s)
        next_rollout = calm + 20.0
        with sampler, MixedLoad(stack.url, stack.key(), workers=self.args.workers) as load:
            while time.monotonic() < end:
                if time.monotonic() >= next_rollout:
                    self._rollout(pool)
                    next_rollout = time.monotonic() + self.args.rollout_every_s
                if time.monotonic() >= next_fault:
                    self._fault(self.rng.choice(FAULTS))
                    next_fault = time.monotonic() + self.rng.expovariate(
                        1 / self.args.fault_every_s
                    )
                time.sleep(0.5)
            time.sleep(self.args.settle_s)  # the last rollout decides, the last fault heals
        self._collect_rollouts(registry)
        stack.run("down", timeout_s=180)
        return self._figures(load, sampler)

    def _rollout(self, pool: list[tuple[str, str]]) -> None:
        if self.rollouts and self.rollouts[-1]["decision"] == "running":
            self._collect_rollouts(connect_to_stack(Settings(data_dir=self.stack.data_dir)))
            if self.rollouts[-1]["decision"] == "running":
                return  # one at a time: a new challenger would interrupt it
        if len(self.rollouts) >= len(pool):
            return
        kind, version = pool[len(self.rollouts)]
        try:
            self.stack.run("rollout", "start", NPC, version)
        except RuntimeError as exc:  # the admin API away (the stack restarting): next slot
            self.fault_log.append((self.now_s(), "rollout", f"not started: {exc}"[:200]))
            return
        self.rollouts.append(
            {"kind": kind, "version": version, "t_s": self.now_s(), "decision": "running"}
        )

    def _collect_rollouts(self, registry: Any) -> None:
        try:
            runs = registry.recent_rollouts(NPC, limit=200)
        except Exception as exc:  # MLflow away (a fault of this run): read again next slot
            print(f"{self.now_s():7.1f} s  rollouts not read: {exc!r}"[:300], flush=True)
            return
        for rollout in self.rollouts:
            mine = [r for r in runs if r["challenger"] == rollout["version"]]
            if mine:
                rollout["decision"] = mine[0]["decision"]
                rollout["reason"] = mine[0]["reason"]
                rollout["runs"] = len(mine)

    def _fault(self, fault: str) -> None:
        stack, detail = self.stack, ""
        pids = stack_processes(stack.data_dir)
        if fault == "ingress_sigkill":
            victims = pids.get("ray::ServeReplica:gameserve:ingress", [])
            if victims:
                victim = self.rng.choice(victims)
                os.kill(victim, signal.SIGKILL)
                detail = f"pid {victim}"
        elif fault == "serve_controller_sigkill":
            for victim in pids.get("ray::ServeController", []):
                os.kill(victim, signal.SIGKILL)
                detail = f"pid {victim}"
        elif fault == "mlflow_sigkill":
            for victim in pids.get("mlflow server", []):
                os.kill(victim, signal.SIGKILL)
                detail = f"pid {victim}"
        elif fault == "stack_sigkill_restart":
            victim = stack.pid()
            os.kill(victim, signal.SIGKILL)
            time.sleep(self.rng.uniform(2.0, 10.0))
            began = time.monotonic()
            try:
                stack.run("up", "--detach")
            except RuntimeError as exc:  # a finding, counted; the run goes on if a retry works
                self.faults["restart_failed"] += 1
                print(f"restart failed: {exc}"[:600], flush=True)
                time.sleep(5.0)
                stack.run("up", "--detach")
            detail = f"pid {victim}; back in {time.monotonic() - began:.1f} s"
        self.faults[fault] += 1
        self.fault_log.append((self.now_s(), fault, detail))
        print(f"{self.now_s():7.1f} s  {fault}  {detail}", flush=True)

    def _figures(self, load: MixedLoad, sampler: ProcessSampler) -> dict[str, Any]:
        every = load.snapshot()
        calm_s = self.args.calm_minutes * 60
        baseline = [c for c in every if c.t_s < calm_s]
        calls = [c for c in every if c.t_s >= calm_s]
        sent = len(calls)
        on_time = sum(c.status == 200 and c.latency_ms <= c.deadline_ms + 10 for c in calls)
        failed = Counter(c.code for c in calls if c.status != 200)
        late = sum(c.status == 200 and c.latency_ms > c.deadline_ms + 10 for c in calls)
        fallbacks = sum(c.fallback for c in calls)
        restarts = [t for t, fault, _ in self.fault_log if fault == "stack_sigkill_restart"]
        # A restart's own CPU (MLflow, the stack's imports) shares these two cores.
        near = sum(
            c.status == 200 and c.latency_ms > c.deadline_ms + 10
            and any(0 <= c.t_s - t <= 40 for t in restarts)
            for c in calls
        )  # fmt: skip
        entries = list(ledgers(self.stack.data_dir / "payloads"))
        correct = sum(EXPECTED[r["kind"]] == r["decision"] for r in self.rollouts)
        calm_on_time = sum(c.status == 200 and c.latency_ms <= c.deadline_ms + 10 for c in baseline)
        return {
            "minutes": self.args.minutes,
            "calm_minutes": self.args.calm_minutes,
            "calm_sent": len(baseline),
            "calm_availability": calm_on_time / len(baseline) if baseline else 0.0,
            "seed": self.args.seed,
            "sent": sent,
            "on_time": on_time,
            "availability": on_time / sent if sent else 0.0,
            "late": late,
            "late_within_40_s_of_a_restart": near,
            "fallbacks": fallbacks,
            "failed": dict(failed),
            "faults": dict(self.faults),
            "fault_log": self.fault_log,
            "rollouts": self.rollouts,
            "rollouts_correct": correct,
            "rollouts_stuck": sum(r["decision"] == "running" for r in self.rollouts),
            "payload_offered": sum(e.offered for e in entries),
            "payload_written": sum(e.written for e in entries),
            "payload_dropped": sum(e.dropped + e.failed for e in entries),
            "payload_unwritten": sum(e.unwritten for e in entries),
            # Warm-up: the calm period (caches, lazy imports, allocator arenas filled).
            "rss": sampler.growth(warmup_s=calm_s),
            "restarts": sampler.restarts(),
            "rss_series": sampler.series(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="with faults, after the calm")
    parser.add_argument("--calm-minutes", type=float, default=5.0, help="no fault: the baseline")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fault-every-s", type=float, default=60.0, help="mean, exponential")
    parser.add_argument("--rollout-every-s", type=float, default=180.0)
    parser.add_argument("--settle-s", type=float, default=45.0)
    parser.add_argument("--workers", type=int, default=3, help="client threads")
    parser.add_argument("--out", type=Path, help="write the table here, and an RSS plot beside")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="chaos-"))  # kept when a run fails: its logs
    chaos = Chaos(args, folder / ".gameserve")
    try:
        figures = chaos.run()
    except BaseException:
        print(f"chaos failed; its data dir and logs are in {folder}", flush=True)
        subprocess.run([GAMESERVE, "down"], env=chaos.stack.env, timeout=180, check=False)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    from benchmarks.chaos_report import report

    text = report(figures)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
        from benchmarks.chaos_report import plot_rss

        plot_rss(figures, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
