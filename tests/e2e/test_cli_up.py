"""``gameserve up`` as a person runs it: a real process, stopped with Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from models import FAMILIES
from pipelines.tracking_server import free_port, port_in_use

GAMESERVE = shutil.which("gameserve", path=str(Path(sys.executable).parent))


def _env(data_dir: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "GAMESERVE_DATA_DIR": str(data_dir),
        "GAMESERVE_TRACKING__PORT": str(port),
        "GAMESERVE_TRAIN__TRAIN_SAMPLES": "4000",
        "GAMESERVE_TRAIN__EPOCHS": "2",
        "GAMESERVE_TRAIN__EVAL_SAMPLES": "1000",
    }


def _wait_for_state(data_dir: Path, process: subprocess.Popen[bytes], timeout_s: float) -> dict:
    state_file = data_dir / "stack.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "gameserve up exited early"
        if state_file.is_file():
            return json.loads(state_file.read_text())
        time.sleep(0.5)
    raise AssertionError(f"no {state_file} after {timeout_s}s")


@pytest.fixture
def stack(tmp_path: Path):
    assert GAMESERVE, "the gameserve console script is not installed"
    port = free_port()
    process = subprocess.Popen(
        [GAMESERVE, "up"],
        env=_env(tmp_path, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield tmp_path, port, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_up_bootstraps_champions_and_stops_cleanly_on_ctrl_c(stack) -> None:
    data_dir, port, process = stack
    state = _wait_for_state(data_dir, process, timeout_s=240)
    assert state["tracking_uri"] == f"http://127.0.0.1:{port}"
    assert set(state["champions"]) == set(FAMILIES)

    client = MlflowClient(tracking_uri=state["tracking_uri"])
    for name in FAMILIES:
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.version == state["champions"][name]
    listing = subprocess.run(
        [GAMESERVE, "models"], env=_env(data_dir, port), capture_output=True, text=True, check=True
    )
    assert "npc-behavior" in listing.stdout
    assert "champion" in listing.stdout

    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output
    assert "MLflow UI:  http://127.0.0.1" in output
    assert not port_in_use("127.0.0.1", port)
    assert not (data_dir / "stack.json").exists()

    # A second start finds the champions in the SQLite store and trains nothing.
    again = subprocess.run(
        [GAMESERVE, "up", "--exit-after-start"],
        env=_env(data_dir, port),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert again.stdout.count("existing") == len(FAMILIES)
    assert "trained now" not in again.stdout
