"""Replica errors on the operator's console: follow Serve's log files, echo ERROR records.

Replicas log to their own files under ``<session>/logs/serve/`` (see
``replica_logging.py``), and the console of ``gameserve up`` shows none of it
unless every replica line is echoed (``ray.log_to_driver``, far too loud at
game rates). This follows those files from the stack process and logs each
ERROR or CRITICAL record, traceback included, under ``gameserve.replicas``.
Bounded: at most ``max_records`` per ``window_s`` (then one line saying how
many were held back) and ``max_record_lines`` per record, so a replica failing
every request costs the console a few lines a second, not thousands.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("gameserve.replicas")

# Serve's format and ours both start a record with its level and a date.
_RECORD_START = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) \d{4}-\d\d-\d\d")
_REPORTED = ("ERROR", "CRITICAL")


@dataclass
class _File:
    offset: int
    partial: bytes = b""
    record: list[str] = field(default_factory=list)  # the pending ERROR record, if any


class ReplicaErrorFollower:
    def __init__(
        self,
        serve_logs: Path,
        *,
        poll_s: float = 0.5,
        max_records: int = 20,
        window_s: float = 10.0,
        max_record_lines: int = 60,
        max_read_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.serve_logs = serve_logs
        self.poll_s = poll_s
        self.max_records = max_records
        self.window_s = window_s
        self.max_record_lines = max_record_lines
        self.max_read_bytes = max_read_bytes
        self._files: dict[Path, _File] = {}
        self._window_start = time.monotonic()
        self._in_window = 0
        self._held_back = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # What exists now was written before we started: only new lines are news.
        for path in self._log_files():
            self._files[path] = _File(offset=path.stat().st_size)

    def _log_files(self) -> list[Path]:
        if not self.serve_logs.is_dir():
            return []
        return sorted(self.serve_logs.glob("*.log"))

    def start(self) -> ReplicaErrorFollower:
        self._thread = threading.Thread(target=self._loop, name="replica-errors", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.poll()  # what the last replicas wrote on their way down

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except OSError as exc:  # a file rotated or removed under us: next pass
                logger.debug("following %s: %s", self.serve_logs, exc)

    def poll(self) -> None:
        """Read what every file gained since the last pass and report its ERROR records."""
        for path in self._log_files():
            state = self._files.setdefault(path, _File(offset=0))
            size = path.stat().st_size
            if size < state.offset:  # truncated or replaced: start over
                state.offset, state.partial = 0, b""
            if size == state.offset:
                self._finish(path, state)  # no more lines: the pending record is whole
                continue
            with path.open("rb") as stream:
                stream.seek(state.offset)
                chunk = stream.read(self.max_read_bytes)
            state.offset += len(chunk)
            *lines, state.partial = (state.partial + chunk).split(b"\n")
            for raw in lines:
                self._line(path, state, raw.decode("utf-8", "replace"))

    def _line(self, path: Path, state: _File, line: str) -> None:
        start = _RECORD_START.match(line)
        if start is None:
            if state.record and len(state.record) < self.max_record_lines:
                state.record.append(line)
            return
        self._finish(path, state)
        if start.group(1) in _REPORTED:
            state.record = [line]

    def _finish(self, path: Path, state: _File) -> None:
        if not state.record:
            return
        record, state.record = state.record, []
        now = time.monotonic()
        if now - self._window_start >= self.window_s:
            if self._held_back:
                held, where = self._held_back, path.parent
                logger.error("%d more replica errors held back; see %s", held, where)
            self._window_start, self._in_window, self._held_back = now, 0, 0
        if self._in_window >= self.max_records:
            self._held_back += 1
            return
        self._in_window += 1
        logger.error("%s: %s", path.stem, "\n".join(record))
