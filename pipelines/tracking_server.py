"""An embedded ``mlflow server``: SQLite backend, local artifacts, loopback only.

The local stack and the MLflow test tier start a real server process this way;
a studio points ``tracking.uri`` at its own server instead.

With ``credentials`` it runs MLflow's own basic-auth app: every call but
``/health`` needs the user and password only the stack holds, and nobody
else is granted anything (``default_permission = NO_PERMISSIONS``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import requests

from models.errors import ConflictError, RegistryUnavailableError
from pipelines.private_files import write_private
from pipelines.settings import TrackingSettings
from serving.runtime.ports import free_port, port_in_use

logger = logging.getLogger(__name__)


def _die_with_parent() -> None:
    """Linux: SIGTERM the server if its parent dies without stopping it (e.g. SIGKILL)."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def is_healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=timeout_s).status_code == 200
    except requests.RequestException:
        return False


@dataclass(frozen=True)
class MlflowCredentials:
    """The embedded server's admin user, kept owner-only under the data dir."""

    username: str
    password: str

    @classmethod
    def at(cls, path: Path) -> MlflowCredentials:
        """The credentials in ``path``, made there (owner-only) on first use."""
        if not path.is_file():
            made = {"username": "gameserve", "password": secrets.token_urlsafe(24)}
            write_private(path, json.dumps(made), exclusive=True)
        return cls(**json.loads(path.read_text()))

    def apply(self) -> None:
        """Make this process's MLflow clients send them (MLflow reads these variables)."""
        os.environ["MLFLOW_TRACKING_USERNAME"] = self.username
        os.environ["MLFLOW_TRACKING_PASSWORD"] = self.password

    def auth(self) -> tuple[str, str]:
        return (self.username, self.password)


def stack_credentials(
    settings: TrackingSettings, credentials_file: Path
) -> MlflowCredentials | None:
    """The embedded server's credentials, for a tool beside the stack; None for a studio's
    own server (whose clients use MLflow's MLFLOW_TRACKING_USERNAME/PASSWORD)."""
    if settings.uri is not None or not credentials_file.is_file():
        return None
    return MlflowCredentials.at(credentials_file)


def _group_alive(process: subprocess.Popen[bytes]) -> bool:
    process.poll()  # a zombie leader would keep the group "alive"
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


class EmbeddedTrackingServer:
    """A ``mlflow server`` child process, started healthy and stopped with its workers."""

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout_s: float = 120.0,
        credentials: MlflowCredentials | None = None,
    ) -> None:
        self.root = root
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.credentials = credentials
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
            raise ConflictError(
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
        # Job execution spawns a dozen helper processes and over a GiB we never use.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        if self.credentials is not None:
            command += ["--app-name", "basic-auth"]
            env.update(self._auth_environment(self.credentials))
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

    def _auth_environment(self, credentials: MlflowCredentials) -> dict[str, str]:
        """MLflow's basic-auth app: its config file, owner-only, and a session secret."""
        config = self.root / "basic_auth.ini"
        write_private(
            config,
            "[mlflow]\n"
            "default_permission = NO_PERMISSIONS\n"
            f"database_uri = sqlite:///{(self.root / 'basic_auth.db').resolve()}\n"
            f"admin_username = {credentials.username}\n"
            f"admin_password = {credentials.password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # PBKDF2 once a minute per worker, not on every registry call.
            "auth_cache_ttl_seconds = 60\n",
        )
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(config.resolve()),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
        }

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

    @property
    def pid(self) -> int | None:
        """The server process's id while one was started (for supervision and tests)."""
        return None if self._process is None else self._process.pid

    def alive(self) -> bool:
        """True while the server process runs (not whether it answers)."""
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the server and every worker it forked (they share its session).

        The whole group, even when the server itself has died: its uvicorn
        worker outlives it as an orphan, still holding the port.
        """
        process, self._process = self._process, None
        if process is None:
            return
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and _group_alive(process):
                time.sleep(0.1)
            if not _group_alive(process):
                break
        process.poll()  # reap the leader if it was ours to reap

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
