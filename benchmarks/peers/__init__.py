"""Peer model servers for the serving benchmark, each in a virtual environment of its own.

KServe, MLServer and PyTriton pin libraries gameserve cannot share (PyTriton
needs numpy<2, MLServer an older uvloop), so each runs from its own venv under
``.bench-venvs/``, made on first use with pinned versions and reused after.
Every peer serves the same ONNX file through ONNX Runtime 1.31 (gameserve's
version) behind the Open Inference Protocol v2 REST route, on loopback only.
The scripts beside this file are what runs inside those venvs: they import the
peer, never gameserve.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import requests

HERE = Path(__file__).parent
VENVS = HERE.parent.parent / ".bench-venvs"
ORT = "onnxruntime==1.31.1"


@dataclass(frozen=True)
class Peer:
    name: str
    script: str
    requirements: tuple[str, ...]
    binary_v2: bool  # speaks the binary tensor extension of v2
    # Serves OIP v2 over gRPC on loopback. KServe's ModelServer can serve gRPC too, but
    # binds it to every interface ([::]) with no option to change that: not run here.
    grpc: bool = False

    @property
    def venv(self) -> Path:
        digest = hashlib.sha256("\n".join(self.requirements).encode()).hexdigest()[:10]
        return VENVS / f"{Path(self.script).stem}-{digest}"


PEERS = (
    Peer("KServe ModelServer", "kserve_server.py", ("kserve==0.21.0", ORT), binary_v2=True),
    # MLServer 1.7.1's worker processes call asyncio.get_event_loop(), which
    # uvloop 0.22 turned into an error.
    Peer("MLServer", "mlserver_server.py", ("mlserver==1.7.1", "uvloop<0.22", ORT), False, True),
    Peer("PyTriton", "pytriton_server.py", ("nvidia-pytriton==0.7.0", "numpy<2", ORT), True, True),
)


def ensure_venv(peer: Peer) -> Path:
    """The peer's python, installing its venv the first time (about a minute each)."""
    python = peer.venv / "bin" / "python"
    done = peer.venv / ".installed"
    if not done.exists():
        print(f"installing {peer.name} into {peer.venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(peer.venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *peer.requirements], check=True
        )
        done.touch()
    return python


@contextlib.contextmanager
def serve(
    peer: Peer, model: Path, port: int, grpc_port: int | None = None, timeout_s: float = 120.0
) -> Iterator[str]:
    """The peer serving ``model`` on 127.0.0.1:port (and gRPC on ``grpc_port``)."""
    command = [str(ensure_venv(peer)), str(HERE / peer.script), "--model", str(model)]
    if grpc_port is not None:
        command += ["--grpc-port", str(grpc_port)]
    url = f"http://127.0.0.1:{port}"
    # A file, not a pipe: a chatty server would block on a full pipe nobody reads. A
    # scratch working directory: MLServer leaves its Prometheus files in the current one.
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as scratch:
        # Its own session: PyTriton starts a tritonserver child that must go down with it.
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            start_new_session=True,
            stdout=log,
            stderr=log,
            cwd=scratch,
        )
        try:
            _wait_ready(url, process, log, timeout_s)
            yield url
        finally:
            _stop(process)


def _wait_ready(
    url: str, process: subprocess.Popen[bytes], log: IO[bytes], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    ready = f"{url}/v2/models/npc-behavior/ready"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{url} exited with {process.returncode}:\n{tail}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(ready, timeout=2).ok:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{url} was not ready within {timeout_s:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # Children of the session (tritonserver) outlive a SIGTERM'd parent otherwise.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
