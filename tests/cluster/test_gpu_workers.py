"""A GPU worker node joins when replicas need it and leaves when they are gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
