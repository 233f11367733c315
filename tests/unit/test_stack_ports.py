"""`gameserve up` refuses a port another program holds, naming the setting that moves it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from models.errors import ConflictError
from pipelines.local_stack import LocalStack
from pipelines.settings import Settings
from serving.runtime.ports import free_port


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
        with pytest.raises(ConflictError, match=expected), LocalStack(settings):
            pass
    assert not (tmp_path / "stack.json").exists()


def test_free_ports_lie_below_the_range_outgoing_connections_take_theirs() -> None:
    """A port from the kernel's ephemeral range can be taken by any process's next
    outgoing connection before the server binds it; ours are chosen below that range."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(20_000 <= port < low for port in ports)
    for port in ports:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))  # free when chosen


def test_a_detached_start_that_fails_prints_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gameserve up --detach` runs the stack in the background: when it fails, the
    reason is printed where the person (or CI) looks, not only in the log it names."""
    from pipelines.stack_commands import up_detached

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        monkeypatch.setenv("GAMESERVE_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("GAMESERVE_SERVING__PORT", str(port))
        settings = Settings()
        assert up_detached(settings, timeout_s=120) == 1
    printed = capsys.readouterr().out
    assert f"see {tmp_path / 'stack.log'}" in printed
    assert f"conflict: serving.port: 127.0.0.1:{port} is already in use" in printed
