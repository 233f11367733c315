"""The per-player answer cache: whole answers only, from one version, young enough, bounded."""

from __future__ import annotations

import numpy as np

from serving.dataplane.answer_cache import AnswerCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _answer(*values: float) -> dict[str, np.ndarray]:
    return {"adjustment": np.asarray(values, dtype=np.float32)}


def test_rows_come_back_in_the_order_asked_from_the_version_that_answered() -> None:
    cache = AnswerCache(clock=Clock())
    cache.put("difficulty", "3", ["a", "b"], _answer(0.1, 0.2))
    version, outputs = cache.get("difficulty", ["b", "a"], ttl_s=30) or ("", {})
    assert version == "3"
    np.testing.assert_array_equal(outputs["adjustment"], _answer(0.2, 0.1)["adjustment"])
    assert cache.get("personalization", ["a"], ttl_s=30) is None  # per family


def test_an_answer_is_whole_fresh_and_from_one_version_or_none() -> None:
    clock = Clock()
    cache = AnswerCache(clock=clock)
    cache.put("difficulty", "3", ["a"], _answer(0.1))
    clock.now += 10
    cache.put("difficulty", "4", ["b"], _answer(0.2))
    assert cache.get("difficulty", ["a", "c"], ttl_s=30) is None  # c never answered
    assert cache.get("difficulty", ["a", "b"], ttl_s=30) is None  # two versions
    assert cache.get("difficulty", [], ttl_s=30) is None
    clock.now += 25  # a is 35 s old, b 25 s
    assert cache.get("difficulty", ["a"], ttl_s=30) is None
    assert cache.get("difficulty", ["b"], ttl_s=30) is not None
    cache.put("difficulty", "4", ["a"], _answer(0.5))  # the newest answer wins
    version, outputs = cache.get("difficulty", ["a", "b"], ttl_s=30) or ("", {})
    assert version == "4"
    np.testing.assert_array_equal(outputs["adjustment"], _answer(0.5, 0.2)["adjustment"])


def test_a_replica_that_sees_many_players_keeps_only_the_latest() -> None:
    cache = AnswerCache(max_entries=100, clock=Clock())
    for player in range(1_000):
        cache.put("difficulty", "1", [f"p{player}"], _answer(float(player)))
    assert len(cache) == 100
    assert cache.get("difficulty", ["p899"], ttl_s=30) is None
    assert cache.get("difficulty", ["p999"], ttl_s=30) is not None


def test_a_kept_row_does_not_hold_the_batch_it_came_from() -> None:
    cache = AnswerCache(clock=Clock())
    batch = np.zeros((4096, 64), dtype=np.float32)
    cache.put("personalization", "1", ["p"], {"scores": batch[:1]})
    _, outputs = cache.get("personalization", ["p"], ttl_s=1) or ("", {})
    assert outputs["scores"].base is None or outputs["scores"].base.nbytes < batch.nbytes
