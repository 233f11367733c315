"""Open-loop load with h2load (nghttp2's generator, C): per-request times, cheap to send.

A Python generator spends more CPU per request than the stack it measures, so
the overload and spike figures come from h2load, pinned to its own core
(``taskset``) while the stack runs on another. h2load's ``--rps`` paces each
connection; its ``--log-file`` records every request's start, status and
duration, from which the benchmarks compute rates, percentiles and time series.
Over HTTP/1.1 a connection carries one request at a time, so a level's rate is
spread over enough connections that each sends well below 1/deadline, and the
connections start spread over one pacing interval (``-r``/``--rate-period``):
started together, every connection would send in the same instant, a burst of
all of them each interval that no game server fleet sends (measured: at 37% of
capacity, 22% of NPC ticks were refused in such bursts, none when spread).
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# A connection paced at this many requests/s leaves each request 50 ms before the next.
PER_CONNECTION_RPS = 20
MAX_CONNECTIONS = 1_000


def binary() -> str:
    found = shutil.which("h2load")
    if found is None:
        raise SystemExit("h2load is not installed: apt-get install -y nghttp2-client")
    return found


@dataclass(frozen=True)
class Stream:
    """One kind of request at one rate (None: closed-loop over ``connections``)."""

    name: str
    path: str
    body: bytes
    headers: dict[str, str]
    rate: float | None
    connections: int = 8

    def clients(self) -> tuple[int, int | None]:
        """Connections and requests/s each (None: as fast as answers come)."""
        if self.rate is None:
            return self.connections, None
        clients = min(MAX_CONNECTIONS, max(1, math.ceil(self.rate / PER_CONNECTION_RPS)))
        return clients, max(1, round(self.rate / clients))


@dataclass
class Log:
    """Every request of one stream: start (s, wall clock), HTTP status (-1: failed), ms."""

    name: str
    start_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    status: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    latency_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    offered: int = 0  # what h2load was asked to send in the run
    summary: str = ""  # h2load's own "requests:" line

    @classmethod
    def read(cls, name: str, path: Path) -> Log:
        rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
        if not rows:
            return cls(name)
        table = np.asarray(rows, dtype=np.float64)
        return cls(name, table[:, 0] / 1e6, table[:, 1].astype(int), table[:, 2] / 1e3)

    def share(self, mask: np.ndarray) -> int:
        return int(mask.sum())


@dataclass(frozen=True)
class Run:
    logs: dict[str, Log]
    generator_cpu_s: float  # h2load's own user + system time
    seconds: float


def run(
    base_url: str, streams: list[Stream], seconds: float, core: int | None, timeout_s: float = 2.0
) -> Run:
    """``streams`` at once for ``seconds``, each by its own h2load (on ``core`` if given)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="gameserve-h2load-") as tmp:
        folder = Path(tmp)
        processes = []
        for stream in streams:
            body = folder / f"{stream.name}.body"
            body.write_bytes(stream.body)
            clients, rps = stream.clients()
            command = [
                binary(), "--h1", "-c", str(clients), "-t", "1",
                "-d", str(body), "--log-file", str(folder / f"{stream.name}.log"),
                "-N", f"{timeout_s:g}", "-H", "content-type: application/json",
            ]  # fmt: skip
            if rps is None:
                command += ["-D", f"{seconds:g}"]
            else:  # h2load takes -r or -D, not both: the run is its number of requests
                per_ms = math.ceil(clients / (1000 / rps))  # connections started per ms
                command += ["--rps", str(rps), "-n", str(clients * round(rps * seconds)),
                            "-r", str(per_ms), "--rate-period", "1ms"]  # fmt: skip
            for name, value in stream.headers.items():
                command += ["-H", f"{name}: {value}"]
            command.append(base_url + stream.path)
            if core is not None:
                command = ["taskset", "-c", str(core), *command]
            processes.append(
                subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            )
        outputs = [p.communicate(timeout=seconds + 60)[0].decode() for p in processes]
        logs = {}
        for stream, output in zip(streams, outputs, strict=True):
            log = Log.read(stream.name, folder / f"{stream.name}.log")
            log.offered = _requested(output, stream, seconds)
            log.summary = next((ln for ln in output.splitlines() if ln.startswith("requests:")), "")
            logs[stream.name] = log
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(logs, cpu, seconds)


def _requested(output: str, stream: Stream, seconds: float) -> int:
    """What the stream meant to send: its rate over the run (h2load's own count if closed)."""
    if stream.rate is not None:
        clients, rps = stream.clients()
        return clients * round((rps or 0) * seconds)
    for line in output.splitlines():
        if line.startswith("requests:"):
            return int(line.split()[1])
    return 0


def pinned_to(core: int) -> None:
    """This process (and whatever it starts from now on: Ray) on ``core`` alone."""
    os.sched_setaffinity(0, {core})
