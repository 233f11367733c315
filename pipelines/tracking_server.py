"""An embedded ``mlflow server``: SQLite backend, local artifacts, loopback only.

The local stack and the MLflow test tier start a real server process this way;
a studio points ``tracking.uri`` at its own server instead.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import requests

from models.errors import GameserveError, RegistryUnavailableError

logger = logging.getLogger(__name__)


def _die_with_parent() -> None:
    """Linux: SIGTERM the server if its parent dies without stopping it (e.g. SIGKILL)."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) == 0


def is_healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=timeout_s).status_code == 200
    except requests.RequestException:
        return False


class EmbeddedTrackingServer:
    """A ``mlflow server`` child process, started healthy and stopped with its workers."""

    def __init__(
        self, root: Path, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 120.0
    ) -> None:
        self.root = root
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def start(self) -> str:
        """Start the server and block until ``/health`` answers; return its URL."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port(self.host)
        elif port_in_use(self.host, self.port):
            raise GameserveError(
                f"tracking.port: {self.host}:{self.port} is already in use; stop what holds it "
                "or set GAMESERVE_TRACKING__PORT"
            )
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--host", self.host,
            "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{(self.root / 'mlflow.db').resolve()}",
            "--artifacts-destination", str((self.root / "artifacts").resolve()),
            "--workers", "1",
        ]  # fmt: skip
        # Job execution spawns a dozen helper processes and ~1.3 GiB we never use.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._wait_until_healthy()
        logger.info("MLflow tracking server at %s (data in %s)", self.url, self.root)
        return self.url

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RegistryUnavailableError(
                    f"mlflow server exited with code {self._process.returncode}; "
                    f"see {self.log_path}"
                )
            if is_healthy(self.url, timeout_s=1.0):
                return
            time.sleep(0.25)
        self.stop()
        raise RegistryUnavailableError(
            f"mlflow server not healthy after {self.startup_timeout_s:.0f}s; see {self.log_path}"
        )

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the server and every worker it forked (they share its session)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> EmbeddedTrackingServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
