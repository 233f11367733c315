"""What a running stack publishes about itself: read by every other command, cheaply.

Kept apart from the stack itself so that reading it never imports Ray or MLflow.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from models.errors import ConflictError
from pipelines.settings import Settings


@dataclass(frozen=True)
class StackState:
    """What a running stack publishes about itself."""

    pid: int
    api_url: str
    dashboard_url: str
    tracking_uri: str
    champions: dict[str, str]
    admin_url: str = ""
    grpc_address: str = ""  # "" when serving.grpc.port is None

    @staticmethod
    def path(settings: Settings) -> Path:
        return settings.data_dir / "stack.json"

    @classmethod
    def read(cls, settings: Settings) -> StackState | None:
        path = cls.path(settings)
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))


class StackLock:
    """Held by the one stack that runs from a data directory, for as long as it runs.

    A second ``gameserve up`` in the same folder must refuse before it touches
    anything: it would otherwise stop the running stack's HAProxy as a killed
    stack's leftover. The state file is written only once a stack serves and
    outlives a SIGKILL, so it cannot tell a live stack; an ``flock`` is released
    by the kernel when its holder dies, however it dies (the descriptor is not
    inherited by the processes the stack starts).
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "stack.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> StackLock:
        """Hold the lock; ConflictError naming the running stack if another holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ConflictError(
                f"a stack already runs from {self.path.parent} (pid {holder}); "
                "`gameserve status` shows it, `gameserve down` stops it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the lock
            self._file = None
