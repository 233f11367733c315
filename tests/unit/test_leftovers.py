"""A killed stack's HAProxy is found by its config path and stopped, nothing else."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from pipelines.leftovers import (
    CONFIG_NAME,
    haproxy_dir,
    processes_under,
    running,
    stop_leftovers,
    stop_mlflow_leftovers,
)


def test_only_a_process_on_this_stacks_config_is_stopped(tmp_path: Path) -> None:
    mine, other = tmp_path / "stack", tmp_path / "other-stack"
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)", "-f"]
    node = "f" * 56  # Ray puts the config in a folder named for the node
    ours = subprocess.Popen([*sleeper, str(haproxy_dir(mine) / node / CONFIG_NAME)])
    theirs = subprocess.Popen([*sleeper, str(haproxy_dir(other) / node / CONFIG_NAME)])
    try:
        assert haproxy_dir(mine) != haproxy_dir(other)
        assert len(str(haproxy_dir(mine) / node / "admin.sock")) <= 97  # HAProxy's limit
        assert processes_under(haproxy_dir(mine)) == [ours.pid]
        assert stop_leftovers(mine) == [ours.pid]
        ours.wait(timeout=10)
        assert not running(ours.pid)
        assert running(theirs.pid)
    finally:
        for process in (ours, theirs):
            process.kill()
            process.wait(timeout=10)


def test_a_zombie_that_is_not_our_child_is_not_running() -> None:
    """The parent never reaps it, as a container's PID 1 may not reap an orphan."""
    script = (
        "import os, sys, time\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    os._exit(0)\n"
        "print(child, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        zombie = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while Path(f"/proc/{zombie}/stat").read_text().split(")")[-1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the forked child never exited"
            time.sleep(0.05)
        assert not running(zombie)
        assert running(parent.pid)
    finally:
        parent.kill()
        parent.wait(timeout=10)


def test_an_orphaned_mlflow_worker_on_this_stacks_store_is_stopped_nothing_else(
    tmp_path: Path,
) -> None:
    """What the chaos hour met: MLflow's server SIGKILLed, then its stack before the
    supervisor's restart; the uvicorn worker, orphaned, held the tracking port and
    the next start failed. Its command line names no store: its environment does."""
    mine, other = tmp_path / "stack" / "mlflow.db", tmp_path / "other" / "mlflow.db"
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]

    def worker(store: Path) -> subprocess.Popen[bytes]:
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{store.resolve()}"}
        return subprocess.Popen(sleeper, env=env)

    ours, theirs = worker(mine), worker(other)
    try:
        assert stop_mlflow_leftovers(mine) == [ours.pid]
        ours.wait(timeout=10)
        assert not running(ours.pid)
        assert running(theirs.pid)
    finally:
        for process in (ours, theirs):
            process.kill()
            process.wait(timeout=10)
