"""A GPU worker node joins when replicas need it and leaves when they are gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_shared_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """AutoscalingCluster runs `ray stop --force`: the session's Ray goes first.

    And no call left running in this process (a thread of a failed test) may start
    or join a Ray now: connected to the scenario's cluster when it is stopped, this
    process would exit without a word a minute later, taking the test report along.
    """
    import ray
    from ray import serve
    from ray._private import auto_init_hook

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()
    monkeypatch.setattr(auto_init_hook, "enable_auto_connect", False)


def test_gpu_node_added_for_pending_replicas_and_removed_when_idle(
    no_shared_ray: None, tmp_path: Path
) -> None:
    out = tmp_path / "timeline.json"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.cluster.gpu_workers_scenario", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    timeline = json.loads(out.read_text())
    events = {e["event"]: e for e in timeline}
    assert done.returncode == 0, (timeline, done.stderr[-3000:])
    assert events["cluster_started"]["gpu_nodes"] == 0
    observed = [e for e in timeline if e["event"] == "observed"]
    assert any(e["gpu_nodes"] == 0 and e["states"].get("RUNNING", 0) < 2 for e in observed)
    assert events["replicas_running"]["states"].get("RUNNING") == 2
    assert events["replicas_running"]["gpu_nodes"] >= 1
    assert events["answered"]["status"] == 200
    assert events["answered"]["model"] == {"name": "npc-behavior", "version": "1"}
    assert events["answered"]["source"] == "model"
    assert events["scaled_in"]["gpu_nodes"] == 0, events["scaled_in"]["busy"]
