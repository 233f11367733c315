"""A replica's measurements keep reaching the collector through any one failed pass."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from serving.app import collector as collector_module
from serving.app.collector import Heard, _Collector
from serving.dataplane.game_time import GameTimeCounters
from serving.dataplane.telemetry import Telemetry


class _Method:
    def __init__(self, calls: list[tuple[str, Any]], name: str, answer: Any = None) -> None:
        self.calls, self.name, self.answer = calls, name, answer

    async def _call(self, *args: Any) -> Any:
        self.calls.append((self.name, args))
        return self.answer

    def remote(self, *args: Any) -> Any:
        return self._call(*args)


class _FakeCollector:
    """The actor's three methods a replica calls, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.merge = _Method(self.calls, "merge")
        self.merge_game_time = _Method(self.calls, "merge_game_time")
        self.merge_telemetry = _Method(self.calls, "merge_telemetry", answer=Heard(3, 2))


async def _run_for(seconds: float, **kwargs: Any) -> None:
    task = asyncio.create_task(collector_module.flush_forever(**kwargs))
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_failed_lookup_and_a_failing_listener_do_not_end_the_flushing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    actor = _FakeCollector()
    lookups: list[int] = []

    def lookup() -> _FakeCollector:
        lookups.append(1)
        if len(lookups) == 1:
            raise TimeoutError("GCS did not answer")  # what a loaded head can do
        return actor

    floors: list[int | None] = []

    def heard(answer: Heard | None) -> None:
        assert answer is not None
        floors.append(answer.floor)
        if len(floors) == 1:
            raise RuntimeError("a listener's bug")

    monkeypatch.setattr(collector_module, "collector", lookup)
    monkeypatch.setattr(collector_module, "FLUSH_INTERVAL_S", 0.01)
    counters = GameTimeCounters()
    counters.family("npc-behavior").expired += 2
    asyncio.run(
        _run_for(0.5, game_time=counters, telemetry=("replica-1", Telemetry()), on_heard=heard)
    )
    names = [name for name, _ in actor.calls]
    assert len(lookups) == 3  # looked up again after each failed pass, and only then
    assert len(floors) >= 3  # the loop outlived the listener's error
    assert set(floors) == {3}
    assert names.count("merge_telemetry") >= 3  # the heartbeat goes on
    shipped = [args[0] for name, args in actor.calls if name == "merge_game_time"]
    assert sum(c["npc-behavior"].expired for c in shipped) == 2  # counted once, not lost
    failures = [r for r in caplog.records if "could not ship" in r.getMessage()]
    assert len(failures) == 1  # once for a run of failing passes (here two), with its traceback


def test_the_heartbeat_answers_how_many_ingress_replicas_are_live(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What each replica divides a key's rate by: the replicas heard lately, itself included."""
    now = [100.0]
    monkeypatch.setattr("serving.app.collector.time.monotonic", lambda: now[0])
    collector = _Collector()
    assert collector.merge_telemetry("r1", Telemetry(), {}) == Heard(None, 1)
    assert collector.merge_telemetry("r2", Telemetry(), {}).ingress_replicas == 2
    now[0] += collector_module.REPLICA_SILENT_S + 1  # r2 was killed: it falls silent
    assert collector.merge_telemetry("r1", Telemetry(), {}).ingress_replicas == 1
    assert set(collector.heard) == {"r1"}  # a gone replica is forgotten: the map stays bounded
