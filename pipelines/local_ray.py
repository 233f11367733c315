"""The local stack's Ray as a process tree of its own: serving outlives the stack process.

``ray.init()`` would start Ray as children that share the driver's fate: a
SIGKILLed ``gameserve up`` took every replica with it, and every request failed
until a restart served again. The stack instead runs ``ray start --head`` (what a
cluster's head runs) in a session of its own, with a temp dir of its own, and
connects to it as a driver. A stack process that dies leaves Ray, the Serve
application and HAProxy serving; the next ``gameserve up`` on the same data dir
reattaches; ``gameserve down`` (or Ctrl-C) stops it, by the processes whose
command line names its temp dir (nobody else's Ray is touched).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from models.errors import GameserveError
from pipelines.leftovers import other_processes
from serving.runtime.ports import free_port, port_in_use
from serving.upstream import ray_token_auth_for_this_process

logger = logging.getLogger(__name__)

RECORD = "ray.json"
LOOPBACK = "127.0.0.1"
# Ray 2.60 turns token authentication on for a head it starts, and a driver that
# does not say so connects as 'disabled' and is refused: both say it, and share
# the token Ray keeps in ~/.ray/auth_token (written by the first head if missing).
TOKEN_AUTH = {"RAY_AUTH_MODE": "token"}


@dataclass(frozen=True)
class LocalRay:
    """One data dir's Ray head: where it listens and the temp dir its processes name."""

    temp_dir: str
    gcs_port: int
    dashboard_port: int

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{LOOPBACK}:{self.dashboard_port}"

    @property
    def session_dir(self) -> Path:
        return Path(self.temp_dir) / "session_latest"

    @classmethod
    def plan(cls, data_dir: Path, dashboard_port: int) -> LocalRay:
        """A head for ``data_dir``: short temp dir (Ray's socket paths must stay under 107
        characters, which a test's data dir would break), GCS on a free port."""
        digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:10]
        return cls(str(Path("/tmp") / f"gsr-{digest}"), free_port(), dashboard_port)

    @classmethod
    def recorded(cls, data_dir: Path) -> LocalRay | None:
        try:
            return cls(**json.loads((data_dir / RECORD).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def record(self, data_dir: Path) -> None:
        (data_dir / RECORD).write_text(json.dumps(asdict(self)))

    def alive(self) -> bool:
        """Its GCS answers on its port, and a process of its own holds it."""
        return port_in_use(LOOPBACK, self.gcs_port) and bool(self.processes())

    def start(self, num_cpus: int | None, object_store_bytes: int, timeout_s: float = 180) -> None:
        """``ray start --head`` with this process's environment (Serve reads its settings
        from it), every listener on loopback, in a session of its own."""
        ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        command = [
            ray, "start", "--head", f"--node-ip-address={LOOPBACK}", f"--port={self.gcs_port}",
            "--include-dashboard=true", f"--dashboard-host={LOOPBACK}",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--object-store-memory={object_store_bytes}", f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
        ]  # fmt: skip
        if num_cpus is not None:
            command.append(f"--num-cpus={num_cpus}")
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, start_new_session=True,
            env={**os.environ, **TOKEN_AUTH, "RAY_USAGE_STATS_ENABLED": "0"}, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            self.stop()
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise GameserveError(f"ray start failed (exit {done.returncode}):\n{tail}")

    def connect(self, log_to_driver: bool) -> Any:
        """Join this head as a driver; Ray's context."""
        import ray  # here: `gameserve status` and `down` read this module without Ray

        ray_token_auth_for_this_process()
        return ray.init(
            address=self.address, log_to_driver=log_to_driver, logging_level=logging.WARNING
        )

    def processes(self) -> list[int]:
        """PIDs of this head (Linux; nothing elsewhere): those whose command line names
        its temp dir, and the Ray workers and agents of their session. Ray renames a
        worker's command line (``ray::ServeReplica...``) and an agent can outlive its
        raylet, so the temp dir alone would miss them; ``ray start`` runs in a session
        of its own, which every process it starts keeps."""
        marker, sessions, named = self.temp_dir.encode(), set(), {}
        for pid, parts in other_processes("cmdline"):
            arguments = b"\0".join(parts)
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                session = int(stat.rsplit(")", 1)[1].split()[3])
            except (OSError, ValueError, IndexError):  # gone meanwhile
                continue
            named[pid] = (arguments, session)
            if marker in arguments:
                sessions.add(session)
        return [
            pid
            for pid, (arguments, session) in named.items()
            if marker in arguments or (session in sessions and arguments.startswith(b"ray::"))
        ]

    def stop(self, grace_s: float = 3.0) -> int:
        """Every process of this head: SIGTERM, then SIGKILL what is left; how many."""
        pids = self.processes()
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self.processes():
            time.sleep(0.1)
        # GCS, raylet and the monitor can outlast a SIGTERM by many seconds, and a
        # worker can start while the others stop: kill what remains, until none does.
        for _ in range(20):
            left = self.processes()
            if not left:
                break
            for pid in left:
                _signal(pid, signal.SIGKILL)
            time.sleep(0.1)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return len(pids)


def forget(data_dir: Path) -> None:
    (data_dir / RECORD).unlink(missing_ok=True)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)
