"""A stack's HAProxy, found by its folder: stopped with the stack, or after its Ray died.

The local Ray serves on when ``gameserve up`` dies (``pipelines/local_ray.py``),
and its HAProxy with it. But HAProxy, started by Serve's proxy actor, can also
outlive the Ray that started it (a head killed by hand, a machine's OOM killer),
keeping the API port. Each stack therefore gives HAProxy a folder of its own
(``haproxy_dir``: config, runtime socket, state), and a stop, or a start that
finds no live Ray of its own, stops any HAProxy still running on that folder:
by the config path in its command line (Ray puts it at
``<folder>/<node id>/haproxy.cfg``), which only a HAProxy of this stack has.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

CONFIG_NAME = "haproxy.cfg"


def haproxy_dir(data_dir: Path) -> Path:
    """This stack's HAProxy folder, one per data dir, so two stacks on a machine never
    share Ray's default /tmp/haproxy-serve. Short: Ray adds a 56-character node id
    below it, and HAProxy refuses a runtime socket path over 97 characters."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"gsh-{digest}"


def other_processes(field: str) -> Iterator[tuple[int, list[bytes]]]:
    """Every other process's ``/proc/PID/<field>`` (``cmdline``, ``environ``), split at
    its NULs (Linux; nothing elsewhere). One that is gone or not ours is skipped."""
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parts = (entry / field).read_bytes().split(b"\0")
        except OSError:
            continue
        if int(entry.name) != os.getpid():
            yield int(entry.name), parts


def processes_under(folder: Path) -> list[int]:
    """PIDs running a config file below ``folder``."""
    prefix, name = f"{folder}/".encode(), CONFIG_NAME.encode()
    return [
        pid
        for pid, arguments in other_processes("cmdline")
        if any(a.startswith(prefix) and a.endswith(name) for a in arguments)
    ]


def stop_leftovers(data_dir: Path, timeout_s: float = 10.0) -> list[int]:
    """Stop what an earlier stack on ``data_dir`` left running; the PIDs stopped."""
    return _stop("HAProxy", processes_under(haproxy_dir(data_dir)), timeout_s)


def mlflow_under(store: Path) -> list[int]:
    """PIDs of an MLflow server, or of its uvicorn worker, on the store ``store`` (Linux).

    The worker's command line names no store (its server hands it over in the
    environment), so the environment is what is read."""
    marker = f"sqlite:///{store.resolve()}".encode()
    return [
        pid
        for pid, environment in other_processes("environ")
        if any(v.startswith(b"MLFLOW_TRACKING_URI=") and v.endswith(marker) for v in environment)
    ]


def stop_mlflow_leftovers(store: Path, timeout_s: float = 10.0) -> list[int]:
    """Stop an MLflow a dead stack left on ``store``: a worker orphaned when its server was
    killed, then its stack before the restart (the server dies with its stack, its
    orphaned worker does not), holds the tracking port. The stack lock is held, so no
    live stack owns it."""
    return _stop("MLflow", [pid for pid in mlflow_under(store) if running(pid)], timeout_s)


def _stop(what: str, pids: list[int], timeout_s: float) -> list[int]:
    """SIGTERM ``pids``, SIGKILL what is left after ``timeout_s``; the PIDs stopped."""
    for pid in pids:
        logger.warning("stopping %s pid %d left by a stack that was killed", what, pid)
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(running(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if running(pid):
            _signal(pid, signal.SIGKILL)
    return pids


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def running(pid: int) -> bool:
    """True while ``pid`` runs. A zombie does not: ours is reaped here, and one whose
    parent died is a zombie until its new parent reaps it, which a container's
    PID 1 may never do (CI saw a SIGKILLed ``gameserve up`` stay "up" that way)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not _zombie(pid)
    return finished == 0


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone since, or no /proc (not Linux): trust kill(0)
        return not Path("/proc/self").exists()
    # The state follows the command name, which may itself hold ")".
    return stat[stat.rindex(")") + 2 :][:1] in ("Z", "X")
