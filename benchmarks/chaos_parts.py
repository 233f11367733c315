"""What ``benchmarks/chaos.py`` is built from: its load, its challengers, its process census."""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gameserve_client import (
    DIFFICULTY_RECOMMEND,
    NPC_ACT,
    PERSONALIZATION_RANK,
    ApiError,
    Client,
    DifficultyRequest,
    NpcActRequest,
    RankRequest,
)
from models import trainable_family
from models.build import build
from models.export import check_parity
from models.training import TrainSettings
from pipelines.local_ray import LocalRay
from pipelines.registry import ModelRegistry
from pipelines.training import register_onnx, train_and_register
from tests import bad_models
from tests.payloads import difficulty_request, npc_tick, rank_request

FAULTS = (
    "ingress_sigkill",
    "serve_controller_sigkill",
    "mlflow_sigkill",
    "stack_sigkill_restart",
)
NPC = trainable_family("npc-behavior")
SMALL = TrainSettings(train_samples=3000, eval_samples=500, epochs=2)


@dataclass
class Call:
    t_s: float
    family: str
    status: int  # 0: no answer at all
    code: str
    latency_ms: float
    deadline_ms: float
    fallback: bool = False


@dataclass
class MixedLoad:
    """Game servers' traffic: 70% NPC ticks, 20% rankings, 10% difficulty, each family's
    default deadline, one resend of a call a reused connection dropped (the client's)."""

    url: str
    api_key: str
    workers: int = 4
    calls: list[Call] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    started: float = 0.0

    def __enter__(self) -> MixedLoad:
        self.started = time.monotonic()
        for worker in range(self.workers):
            thread = threading.Thread(target=self._run, args=(worker,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def _run(self, worker: int) -> None:
        rng = random.Random(worker)
        npc = NpcActRequest.model_validate(npc_tick(4))
        difficulty = DifficultyRequest.model_validate(difficulty_request(2))
        rank = RankRequest.model_validate(rank_request(50))
        kinds: list[tuple[str, float, Callable[[Client, str], Any]]] = [
            ("npc-behavior", 20.0, lambda c, p: c.call(NPC_ACT, npc, routing_key=p)),
            ("personalization", 100.0, lambda c, p: c.call(PERSONALIZATION_RANK, rank)),
            ("difficulty-tuning", 50.0, lambda c, p: c.call(DIFFICULTY_RECOMMEND, difficulty)),
        ]
        with Client(self.url, self.api_key, timeout_s=10.0) as client:
            while not self._stop.is_set():
                family, deadline_ms, send = rng.choices(kinds, weights=(0.7, 0.2, 0.1))[0]
                player = f"player-{rng.randrange(100_000)}"
                sent = time.monotonic()
                try:
                    answer = send(client, player)
                    status, code = 200, "ok"
                    fallback = answer.model.version is None
                except ApiError as exc:
                    status, code, fallback = exc.status, exc.code, False
                except Exception as exc:  # the client let something through: a defect, counted
                    status, code, fallback = 0, type(exc).__name__, False
                call = Call(
                    sent - self.started, family, status, code,
                    (time.monotonic() - sent) * 1000, deadline_ms, fallback,
                )  # fmt: skip
                with self._lock:
                    self.calls.append(call)


class Challengers:
    """NPC versions to roll out: good (trained on another seed), poisoned, slow."""

    def __init__(self, registry: ModelRegistry, seed: int) -> None:
        self.registry = registry
        self.seed = seed
        self.count = 0
        self._base: Any = None

    def pool(self, count: int) -> list[tuple[str, str]]:
        """``count`` challengers, good, poisoned and slow in turn: (kind, version)."""
        kinds = [("good", "poisoned", "slow")[i % 3] for i in range(count)]
        return [(kind, self.register(kind)) for kind in kinds]

    def register(self, kind: str) -> str:
        self.count += 1
        seed = self.seed * 1000 + self.count
        if kind == "good":
            settings = SMALL.model_copy(update={"seed": seed})
            return train_and_register(NPC, settings, self.registry).version
        if self._base is None:
            self._base = build(NPC, SMALL.model_copy(update={"seed": self.seed})).trained.module
        module = (
            bad_models.NanForWoundedNpcs(self._base)
            if kind == "poisoned"
            else bad_models.Slow(self._base)
        )
        onnx_model = bad_models.export(module)
        parity = check_parity(module, onnx_model, NPC.contract, [NPC.example_inputs(64, 3)])
        return register_onnx(
            NPC, onnx_model, self.registry, seed=seed,
            metrics={"parity_max_abs_diff": parity.max_abs_diff},
            params={"kind": type(module).__name__},
        ).version  # fmt: skip


def _name(pid: int) -> tuple[str, int] | None:
    """A process's name as a census counts it, and its parent."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
    words = [a.decode(errors="replace") for a in arguments if a]
    if not words:
        return None
    if words[0].startswith("ray::"):
        return words[0].split()[0], parent
    scripts = [Path(w).name for w in words[:3] if w.endswith(".py")]
    return (scripts[0] if scripts else Path(words[0]).name), parent


def stack_processes(data_dir: Path) -> dict[str, list[int]]:
    """Every process of the stack on ``data_dir``, by name: Ray's by its head,
    ``gameserve up`` by its state file, MLflow by its store."""
    found: dict[str, list[int]] = {}
    local = LocalRay.recorded(data_dir)
    for pid in local.processes() if local else []:
        named = _name(pid)
        if named:
            found.setdefault(named[0], []).append(pid)
    store = str((data_dir / "mlflow").resolve()).encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            arguments = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if store in arguments and b"server" in arguments:
            found.setdefault("mlflow server", []).append(int(entry.name))
    try:
        stack = json.loads((data_dir / "stack.json").read_text())["pid"]
        found["gameserve up"] = [int(stack)]
    except (OSError, ValueError, KeyError):
        pass
    return found


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class ProcessSampler:
    """The RSS of every stack process, every ``every_s``, in a thread of its own."""

    def __init__(self, data_dir: Path, every_s: float) -> None:
        self.data_dir, self.every_s = data_dir, every_s
        self.samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = 0.0

    def __enter__(self) -> ProcessSampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            t_s = time.monotonic() - self.started
            for name, pids in stack_processes(self.data_dir).items():
                for pid in pids:
                    rss = rss_mb(pid)
                    if rss is not None:
                        self.samples.setdefault((name, pid), []).append((t_s, rss))

    def series(self) -> dict[str, list[tuple[float, float]]]:
        return {f"{name} {pid}": points for (name, pid), points in self.samples.items()}

    def restarts(self) -> dict[str, int]:
        """New PIDs per process name after the first: what faults (or crashes) replaced."""
        names: dict[str, int] = {}
        for name, _ in self.samples:
            names[name] = names.get(name, -1) + 1
        return {name: count for name, count in sorted(names.items()) if count}

    def growth(self, warmup_s: float) -> dict[str, dict[str, float]]:
        """Per process that lived through the run after warm-up: RSS then and at the end,
        and the growth rate per hour (medians of three samples at each end)."""
        figures: dict[str, dict[str, float]] = {}
        for (name, pid), points in self.samples.items():
            after = [(t, rss) for t, rss in points if t >= warmup_s]
            if len(after) < 6 or after[-1][0] - after[0][0] < 60:
                continue
            first = statistics.median(rss for _, rss in after[:3])
            last = statistics.median(rss for _, rss in after[-3:])
            hours = (after[-1][0] - after[0][0]) / 3600
            figures[f"{name} {pid}"] = {
                "rss_mb_after_warmup": round(first, 1),
                "rss_mb_at_end": round(last, 1),
                "growth_pct_per_hour": round((last - first) / first * 100 / hours, 2),
                "hours": round(hours, 3),
            }
        return figures
