"""Payload logging: a sampled share of answered requests, written as Parquet off the request path.

The request path only samples and puts a ``Record`` (references to tensors
already made) on a bounded queue; when the queue is full the record is
dropped and counted, never silently. A writer thread batches records per
family into files (``payload_files.py``) rotated by rows or age, and ``close``
(the replica's graceful shutdown, on SIGTERM) writes what is left. Every count
goes to a per-replica ledger that survives a SIGKILL.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving.dataplane.events import Answered, Event
from serving.dataplane.payload_files import (
    Ledger,
    Record,
    ledger_path,
    to_table,
    write_atomically,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PayloadLogConfig:
    root: Path
    replica: str
    sample: Callable[[str], float]  # by family: the share of requests recorded
    max_queue: int = 10_000
    rotate_rows: int = 50_000
    rotate_s: float = 60.0
    salt: bytes = b""  # for the routing-key hash (payload_files.salt_from)


class PayloadLog:
    """One replica's payload log; see the module docstring."""

    def __init__(self, config: PayloadLogConfig) -> None:
        self.config = config
        self._queue: queue.Queue[tuple[str, Record] | None] = queue.Queue(config.max_queue)
        self._ledgers: dict[str, Ledger] = {}
        self._rng = random.Random()
        self._sample: dict[str, float] = {}
        self._lock = threading.Lock()  # the counts, read by the flush to the collector
        self._counts: Counter[tuple[str, str]] = Counter()
        self._sequence = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._write_forever, name="payload-log", daemon=True)
        self._thread.start()

    def wanted(self, family: str) -> bool:
        """Whether this request of ``family`` is in the sample (decide before building a record)."""
        share = self._sample.get(family)
        if share is None:
            share = self._sample[family] = self.config.sample(family)
        return share >= 1.0 or (share > 0.0 and self._rng.random() < share)

    def listen(self, event: Event) -> None:
        """Sample an answered request (the data plane's event) into the log."""
        if not isinstance(event, Answered) or not self.wanted(event.family):
            return
        answer = event.answer
        record = Record(
            at_s=time.time(),
            request_id=new_request_id(),
            version=answer.version,
            role=answer.role,
            source=answer.source,
            fallback_reason=answer.fallback_reason,
            latency_ms=(time.monotonic() - event.call.received) * 1000,
            routing_key=event.routing_key,
            inputs=event.tensors,
            outputs=answer.outputs,
        )
        self.offer(event.family, record)

    def offer(self, family: str, record: Record) -> None:
        """Queue ``record`` for writing; a full queue drops it, counted."""
        ledger = self._ledger(family)
        ledger.add(offered=1)
        self._count(family, "offered")
        try:
            self._queue.put_nowait((family, record))
        except queue.Full:
            ledger.add(dropped=1)
            self._count(family, "dropped")

    def counts(self) -> dict[tuple[str, str], int]:
        """Since this replica started, by (family, outcome): offered, written, dropped, failed."""
        with self._lock:
            return dict(self._counts)

    def close(self, timeout_s: float = 30.0) -> None:
        """Write everything queued, then stop (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._queue.put(None)  # blocks only while the writer drains a full queue
        self._thread.join(timeout_s)
        for ledger in self._ledgers.values():
            ledger.close()

    def _count(self, family: str, outcome: str, n: int = 1) -> None:
        with self._lock:
            self._counts[(family, outcome)] += n

    def _ledger(self, family: str) -> Ledger:
        ledger = self._ledgers.get(family)
        if ledger is None:
            with self._lock:  # one mapping per family: two would each cache their own counts
                ledger = self._ledgers.get(family)
                if ledger is None:
                    path = ledger_path(self.config.root, family, self.config.replica)
                    ledger = self._ledgers[family] = Ledger(path)
        return ledger

    def _write_forever(self) -> None:
        pending: dict[str, list[Record]] = {}
        since: dict[str, float] = {}
        while True:
            try:
                item = self._queue.get(timeout=min(self.config.rotate_s, 1.0))
            except queue.Empty:
                pass  # nothing new: only the age of what waits
            else:
                if item is None:
                    break
                family, record = item
                pending.setdefault(family, []).append(record)
                since.setdefault(family, time.monotonic())
            for family in list(pending):
                full = len(pending[family]) >= self.config.rotate_rows
                old = time.monotonic() - since[family] >= self.config.rotate_s
                if full or old:
                    self._write(family, pending.pop(family))
                    since.pop(family)
        while True:  # closing: what is still queued, then every batch
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                break
            if left is not None:
                pending.setdefault(left[0], []).append(left[1])
        for family, records in pending.items():
            self._write(family, records)

    def _write(self, family: str, records: list[Record]) -> None:
        self._sequence += 1
        day = time.strftime("%Y-%m-%d", time.gmtime(records[0].at_s))
        name = f"{self.config.replica}-{self._sequence:06d}.parquet"
        try:
            write_atomically(
                to_table(records, self.config.salt), self.config.root / family / day / name
            )
        except Exception:  # a full disk must not stop serving: counted, and said
            logger.exception(
                "payload log: %d %s records could not be written", len(records), family
            )
            self._ledger(family).add(failed=len(records))
            self._count(family, "failed", len(records))
            return
        self._ledger(family).add(written=len(records))
        self._count(family, "written", len(records))


def new_request_id() -> str:
    return uuid.uuid4().hex
