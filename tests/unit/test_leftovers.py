"""A killed stack's HAProxy is found by its config path and stopped, nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipelines.leftovers import CONFIG_NAME, haproxy_dir, processes_under, running, stop_leftovers


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
