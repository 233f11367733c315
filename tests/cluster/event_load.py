"""The event scenario's load and what it watches: open-loop NPC ticks, and once a
second the NPC replicas (running, and all Serve holds), the GPU nodes, and whether
the stack's /metrics says the cluster is full."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import aiohttp
import ray
import requests
from ray import serve

from pipelines.stack_commands import capacity_exhausted
from tests.payloads import npc_tick

NPC = "npc-behavior"
ROWS = 64  # NPCs per tick (a busy server's)
MAX_IN_FLIGHT = 2_000
_REASON = re.compile(rb'"fallback_reason":"(\w+)"')


def gpu_nodes() -> int:
    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) > 0)


def npc_replicas(app: str) -> tuple[int, int]:
    """(running, all) replicas of the NPC deployment."""
    status = serve.status().applications.get(app)
    if status is None or NPC not in status.deployments:
        return 0, 0
    states = status.deployments[NPC].replica_states
    running = sum(n for s, n in states.items() if str(s).endswith("RUNNING"))
    return running, sum(states.values())


class Load:
    """Open-loop NPC ticks by phase; per second: what was offered and what came back."""

    def __init__(self, url: str, deadline_ms: float, app: str, watch_capacity: bool) -> None:
        self.url, self.app = url, app
        # A /metrics scrape a second is load on the stack measured: only where asked.
        self.capacity_url = url if watch_capacity else None
        self.headers = {"X-Deadline-Ms": f"{deadline_ms:g}"}
        self.seconds: list[dict[str, Any]] = []
        self.in_flight = 0

    def _second(self, t: float) -> dict[str, Any]:
        while len(self.seconds) <= int(t):
            self.seconds.append({"offered": 0, "model": 0, "fallback": 0, "refused": 0,
                                 "refused_no_retry_after": 0, "failed": 0, "unsent": 0,
                                 "reasons": {}, "latency_ms": [], "replicas": None, "nodes": None,
                                 "exhausted": None})  # fmt: skip
        return self.seconds[int(t)]

    async def _one(self, session: aiohttp.ClientSession, slot: dict[str, Any]) -> None:
        self.in_flight += 1
        sent = time.monotonic()
        try:
            async with session.post(f"{self.url}/v1/npc/act", data=self.body) as response:
                body = await response.read()
                took = (time.monotonic() - sent) * 1000
                if response.status == 200:
                    slot["model" if b'"source":"model"' in body else "fallback"] += 1
                    reason = _REASON.search(body)
                    if reason:
                        why = reason.group(1).decode()
                        slot["reasons"][why] = slot["reasons"].get(why, 0) + 1
                    slot["latency_ms"].append(round(took, 2))
                elif response.status in (429, 503):
                    slot["refused"] += 1
                    if "Retry-After" not in response.headers:
                        slot["refused_no_retry_after"] += 1
                else:
                    slot["failed"] += 1
        except (aiohttp.ClientError, TimeoutError):
            slot["failed"] += 1
        finally:
            self.in_flight -= 1

    async def _sample(self, started: float, until: float) -> None:
        loop = asyncio.get_running_loop()
        while (now := time.monotonic() - started) < until:
            seen = await loop.run_in_executor(None, _observe, self.app, self.capacity_url)
            self._second(now).update(seen)
            await asyncio.sleep(1.0)

    async def play(self, phases: list[tuple[str, float, float]]) -> None:
        self.body = json.dumps(npc_tick(ROWS)).encode()
        headers = {**self.headers, "Content-Type": "application/json"}
        total = sum(duration for _, duration, _ in phases)
        connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=headers
        ) as session:
            started = time.monotonic()
            sampler = asyncio.create_task(self._sample(started, total))
            tasks: set[asyncio.Task[None]] = set()
            edge = 0.0
            for _, duration, rps in phases:
                sent = 0
                while (now := time.monotonic() - started) < edge + duration:
                    due = edge + sent / rps
                    if now < due:
                        await asyncio.sleep(due - now)
                        continue
                    slot = self._second(now)
                    slot["offered"] += 1
                    sent += 1
                    if self.in_flight >= MAX_IN_FLIGHT:
                        slot["unsent"] += 1
                        continue
                    task = asyncio.create_task(self._one(session, slot))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                edge += duration
            await asyncio.gather(*tasks)
            await sampler


def _exhausted(url: str) -> bool | None:
    """Whether the stack's /metrics says the NPC deployment's cluster is full."""
    try:
        text = requests.get(f"{url}/metrics", timeout=2).text
    except requests.RequestException:
        return None
    return NPC in capacity_exhausted(text)


def _observe(app: str, url: str | None) -> dict[str, Any]:
    running, present = npc_replicas(app)
    exhausted = _exhausted(url) if url is not None else None
    return {"replicas": [running, present], "nodes": gpu_nodes(), "exhausted": exhausted}
