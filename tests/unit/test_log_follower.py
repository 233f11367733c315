"""Replica ERROR records reach the console once each, whole, and within bounds."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from serving.app.log_follower import ReplicaErrorFollower

TRACEBACK = [
    "ERROR 2026-11-25 10:00:01,000 serving.http.errors -- /v1/npc/act inference_failed: NaN",
    "Traceback (most recent call last):",
    '  File "serving/dataplane/plane.py", line 10, in infer',
    "models.errors.InferenceError: outputs are not finite",
]


def _append(path: Path, *lines: str) -> None:
    with path.open("a") as stream:
        stream.write("".join(line + "\n" for line in lines))


def _records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gameserve.replicas"]


def test_error_records_are_reported_whole_and_info_is_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "replica_gameserve_Ingress_a.log"
    _append(old, "ERROR 2026-11-25 09:00:00,000 x -- written before the stack started")
    follower = ReplicaErrorFollower(tmp_path)
    caplog.set_level(logging.ERROR, "gameserve.replicas")
    _append(old, "INFO 2026-11-25 10:00:00,000 models.runtime -- npc: CPUExecutionProvider")
    _append(old, *TRACEBACK[:2])  # a record caught mid-write
    follower.poll()
    assert _records(caplog) == []
    new = tmp_path / "replica_gameserve_Ingress_b.log"
    _append(old, *TRACEBACK[2:], "INFO 2026-11-25 10:00:02,000 serving -- swapped")
    _append(new, TRACEBACK[0])
    follower.poll()
    follower.poll()  # the new file's record ends when nothing more comes
    records = _records(caplog)
    assert records[0] == "replica_gameserve_Ingress_a: " + "\n".join(TRACEBACK)
    assert records[1] == "replica_gameserve_Ingress_b: " + TRACEBACK[0]
    assert len(records) == 2


def test_a_replica_failing_every_request_costs_the_console_a_bounded_number_of_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "replica_gameserve_Ingress_a.log"
    path.touch()
    follower = ReplicaErrorFollower(tmp_path, max_records=5, window_s=3600, max_record_lines=3)
    caplog.set_level(logging.ERROR, "gameserve.replicas")
    for _ in range(1_000):
        _append(path, *TRACEBACK, *(["  more frames"] * 100))
    follower.poll()
    follower.poll()
    records = _records(caplog)
    assert len(records) == 5
    assert all(len(r.splitlines()) == 3 for r in records)
