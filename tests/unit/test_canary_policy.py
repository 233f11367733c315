"""The canary decision on synthetic windows: every gate, in order."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.rollout.policy import judge
from pipelines.rollout.settings import Thresholds
from serving.dataplane.rollout_metrics import WindowSummary

LIMITS = Thresholds(
    min_requests=50,
    min_latency_samples=100,
    max_p99_ratio=2.0,
    p99_slack_ms=5.0,
    max_divergence=0.2,
)


def window(**overrides: Any) -> WindowSummary:
    base: dict[str, Any] = {
        "version": "2",
        "requests": 200,
        "error_rate": 0.0,
        "invalid_rate": 0.0,
        "p50_ms": 4.0,
        "p99_ms": 10.0,
        "divergence": 0.05,
        "compared": 200,
    }
    return WindowSummary(**{**base, **overrides})


@pytest.mark.parametrize(
    ("challenger", "action", "words"),
    [
        (window(requests=0), "wait", "no challenger traffic"),
        (window(requests=5, invalid_rate=0.2), "fail", "invalid outputs"),
        (window(requests=20), "wait", "20 of 50"),
        (window(error_rate=0.05), "fail", "error rate"),
        (window(p99_ms=50.0), "fail", "latency"),
        (window(p99_ms=19.0), "pass", "within"),
        (window(compared=10), "wait", "comparisons"),
        (window(divergence=0.6), "fail", "diverges"),
        (window(divergence=0.6, p99_ms=50.0), "fail", "diverges"),
        (window(requests=80, compared=80, p99_ms=50.0), "wait", "80 of 100 latency samples"),
        (window(), "pass", "within"),
    ],
)
def test_judge(challenger: WindowSummary, action: str, words: str) -> None:
    verdict = judge(window(version="1"), challenger, LIMITS)
    assert verdict.action == action
    assert words in verdict.reason


def test_latency_slack_protects_tiny_p99s() -> None:
    fast_champion = window(p99_ms=1.0)
    assert judge(fast_champion, window(p99_ms=5.5), LIMITS).action == "pass"
    assert judge(fast_champion, window(p99_ms=6.5), LIMITS).action == "fail"


def test_champion_errors_raise_the_bar_fairly() -> None:
    noisy_champion = window(error_rate=0.03)
    assert judge(noisy_champion, window(error_rate=0.035), LIMITS).action == "pass"
    assert judge(noisy_champion, window(error_rate=0.05), LIMITS).action == "fail"


def test_a_latency_breach_waits_for_the_whole_window() -> None:
    early = judge(window(version="1"), window(p99_ms=50.0), LIMITS, baked=False)
    assert (early.action, early.reason.split(":")[0]) == ("wait", "latency")
    assert judge(window(version="1"), window(p99_ms=50.0), LIMITS, baked=True).action == "fail"
    nan = judge(window(version="1"), window(invalid_rate=0.1), LIMITS, baked=False)
    assert nan.action == "fail"
