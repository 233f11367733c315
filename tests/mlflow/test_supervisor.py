"""The embedded MLflow server comes back by itself after it is killed."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest

from pipelines.supervisor import TrackingSupervisor
from pipelines.tracking_server import EmbeddedTrackingServer, MlflowCredentials, is_healthy


def test_a_killed_server_is_restarted_on_its_port_and_logged_once(
    tmp_path: Path, credentials: MlflowCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedTrackingServer(tmp_path / "mlflow", port=0, credentials=credentials)
    server.start()
    supervisor = TrackingSupervisor(server, interval_s=0.25, backoff_s=(0.5,))
    supervisor.start()
    try:
        url, first = server.url, server.pid
        assert first is not None
        with caplog.at_level(logging.INFO, logger="pipelines.supervisor"):
            os.kill(first, signal.SIGKILL)  # its uvicorn worker lives on as an orphan
            killed = time.monotonic()
            deadline = killed + 120
            while supervisor.restarts == 0 or not is_healthy(url):
                assert time.monotonic() < deadline, "MLflow did not come back in 120 s"
                time.sleep(0.25)
            recovered_s = time.monotonic() - killed
        assert server.url == url  # the same port: every client's URL stays valid
        assert server.pid not in (None, first)
        lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.supervisor"]
        assert sum("stopped" in line for line in lines) == 1, lines
        assert sum("is back after" in line for line in lines) == 1, lines
        print(f"\nMLflow SIGKILLed: back on {url} after {recovered_s:.1f} s")
    finally:
        supervisor.stop()
        server.stop()
    assert not is_healthy(url)
