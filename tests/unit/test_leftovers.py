"""A killed stack's HAProxy is found by its config path and stopped, nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipelines.leftovers import CONFIG_NAME, haproxy_dir, processes_on, running, stop_leftovers


def test_only_a_process_on_this_stacks_config_is_stopped(tmp_path: Path) -> None:
    mine, other = tmp_path / "stack", tmp_path / "other-stack"
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)", "-f"]
    ours = subprocess.Popen([*sleeper, str(haproxy_dir(mine) / CONFIG_NAME)])
    theirs = subprocess.Popen([*sleeper, str(haproxy_dir(other) / CONFIG_NAME)])
    try:
        assert haproxy_dir(mine) != haproxy_dir(other)
        assert len(str(haproxy_dir(mine) / "admin.sock")) < 100  # a unix socket path
        assert processes_on(haproxy_dir(mine) / CONFIG_NAME) == [ours.pid]
        assert stop_leftovers(mine) == [ours.pid]
        ours.wait(timeout=10)
        assert not running(ours.pid)
        assert running(theirs.pid)
    finally:
        for process in (ours, theirs):
            process.kill()
            process.wait(timeout=10)
