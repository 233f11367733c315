"""`gameserve up` refuses a port another program holds, naming the setting that moves it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from models.errors import GameserveError
from pipelines.local_stack import LocalStack
from pipelines.settings import Settings
from pipelines.tracking_server import free_port


def test_a_held_replica_http_port_stops_the_start_before_anything_runs(tmp_path: Path) -> None:
    """The replicas' port is shared by whoever binds it (SO_REUSEPORT): another stack's
    replicas on it would answer this stack's traffic, so it must be free at start."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        serving = {
            "port": free_port(),
            "admin": {"port": free_port()},
            "grpc": {"port": free_port()},
            "runtime": {"haproxy_ingress": True, "replica_http_port": port},
        }
        settings = Settings.model_validate({"data_dir": tmp_path, "serving": serving})
        expected = (
            rf"serving\.runtime\.replica_http_port: 127\.0\.0\.1:{port} is already in use.*"
            r"GAMESERVE_SERVING__RUNTIME__REPLICA_HTTP_PORT"
        )
        with pytest.raises(GameserveError, match=expected), LocalStack(settings):
            pass
    assert not (tmp_path / "stack.json").exists()
