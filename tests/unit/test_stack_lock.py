"""One stack per data directory: a second start refuses before touching the first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.errors import ConflictError, GameserveError
from pipelines.local_stack import LocalStack
from pipelines.settings import Settings
from pipelines.stack_state import StackLock

HOLD = """
import sys, time
from pathlib import Path
from pipelines.stack_state import StackLock
lock = StackLock(Path(sys.argv[1])).acquire()  # held while referenced
print("held", flush=True)
time.sleep(120)
"""


def _holder(data_dir: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_start_refuses_before_it_touches_the_running_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The running stack's HAProxy looks like a killed stack's leftover to a second
    start; it must not get that far (issue: the API refused every call for 25 s)."""
    stopped: list[Path] = []
    monkeypatch.setattr("pipelines.local_stack.stop_leftovers", stopped.append)
    holder = _holder(tmp_path)
    try:
        settings = Settings.model_validate({"data_dir": tmp_path})
        refused = pytest.raises(ConflictError, match=rf"already runs .*\(pid {holder.pid}\)")
        with refused, LocalStack(settings):
            pass
        assert stopped == []  # no HAProxy of the running stack was looked for
        assert not (tmp_path / "stack.json").exists()
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_a_killed_stacks_lock_is_free_at_once(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    deadline = time.monotonic() + 10
    lock = StackLock(tmp_path)
    while True:
        try:
            lock.acquire()
            break
        except GameserveError:
            assert time.monotonic() < deadline, "the kernel kept a dead holder's lock"
            time.sleep(0.05)
    assert (tmp_path / "stack.lock").read_text() == str(os.getpid())
    with pytest.raises(ConflictError, match="already runs"):
        StackLock(tmp_path).acquire()  # held by this process now, as a stack holds it
    lock.release()
    StackLock(tmp_path).acquire().release()
