"""A bounded load generator: stops on request, after max_requests or after max_s."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from tests.payloads import npc_tick


@dataclass
class Outcome:
    player: str
    status: int
    version: str | None
    sound: bool  # every probability finite, each NPC's summing to 1
    detail: str = ""  # what a failure said: the body, or the client's exception
    sent_s: float = 0.0  # when it was sent, in seconds since the load started


Call = Callable[[requests.Session, str, str, random.Random], Outcome]


def npc_act(session: requests.Session, url: str, player: str, _: random.Random) -> Outcome:
    response = session.post(
        f"{url}/v1/npc/act",
        json=npc_tick(4, player),
        headers={"X-Player-Id": player},
        timeout=30,
    )
    return _judge(player, response)


def _judge(player: str, response: requests.Response) -> Outcome:
    if response.status_code != 200:
        return Outcome(player, response.status_code, None, False, response.text[:300])
    body = response.json()
    sound = all(
        all(isinstance(p, float) and math.isfinite(p) for p in d["probabilities"].values())
        and abs(sum(d["probabilities"].values()) - 1.0) < 1e-3
        for d in body["decisions"]
    )
    return Outcome(player, 200, body["model"]["version"], sound)


@dataclass
class Load:
    url: str
    players: int = 60
    workers: int = 4
    max_requests: int = 50_000
    max_s: float = 240.0
    headers: dict[str, str] = field(default_factory=dict)  # the API key
    # One request for one player, judged: an NPC tick on the game API by default.
    call: Call = npc_act
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default=0.0, init=False)  # monotonic, set on entry

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        deadline = self.started + self.max_s
        for worker in range(self.workers):
            thread = threading.Thread(target=self._run, args=(worker, deadline), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, worker: int, deadline: float) -> None:
        session = requests.Session()
        session.headers.update(self.headers)
        rng = random.Random(worker)
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if len(self.outcomes) >= self.max_requests:
                    return
            player = f"player-{rng.randrange(self.players)}"
            sent_s = self.now_s()
            try:
                outcome = self.call(session, self.url, player, rng)
            except requests.RequestException as exc:
                outcome = Outcome(player, 0, None, False, repr(exc)[:300])
            outcome.sent_s = sent_s
            with self._lock:
                self.outcomes.append(outcome)

    def now_s(self) -> float:
        return time.monotonic() - self.started

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.snapshot() if o.status != 200 or not o.sound]
