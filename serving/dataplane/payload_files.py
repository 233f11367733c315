"""Recorded requests on disk: Parquet files that are whole or absent, and a crash-proof ledger.

A file holds one family's requests, one row each: when, who answered (version,
role, source), how fast, the routing key hashed, and every input and output
tensor, flattened beside its shape (``<tensor>`` and ``<tensor>__shape``). It
is written under a ``.tmp`` name, synced, then renamed: a reader never meets
half a file, and a ``.tmp`` left by a killed writer is not data.

The ledger is a few counters per replica and family in a memory-mapped file.
The kernel keeps what was stored there even when the process is SIGKILLed, so
after a crash ``offered - written - dropped`` says exactly how many requests
the dead replica held in memory: nothing is lost without being counted.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

LEDGER_DIR = "_ledger"
SHAPE_SUFFIX = "__shape"
_LEDGER = struct.Struct("<4q")
_COUNT = struct.Struct("<q")


@dataclass(frozen=True, slots=True)
class Record:
    """One answered request, as the request path hands it over (nothing computed yet)."""

    at_s: float  # wall clock
    request_id: str
    version: str | None
    role: str
    source: str
    fallback_reason: str | None
    latency_ms: float
    routing_key: str | None
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


def salt_from(secret: bytes) -> bytes:
    """The routing-key salt derived from a stack secret (its signing key): a separate value,
    so the files never hold anything that could help forge a signature."""
    return hashlib.blake2b(secret, digest_size=32, person=b"gameserve-salt").digest()


def hashed(key: str | None, salt: bytes = b"") -> str | None:
    """A routing key's stand-in: the same player maps to the same value within a stack's
    salt; without the salt, knowing a player id does not find its rows."""
    if key is None:
        return None
    digest = hashlib.blake2b(key.encode(), digest_size=8, key=salt, person=b"gameserve-key")
    return digest.hexdigest()


def to_table(records: Sequence[Record], salt: bytes = b"") -> pa.Table:
    columns: dict[str, pa.Array] = {
        "at": pa.array([int(r.at_s * 1e6) for r in records], pa.timestamp("us", tz="UTC")),
        "request_id": pa.array([r.request_id for r in records], pa.string()),
        "version": pa.array([r.version for r in records], pa.string()),
        "role": pa.array([r.role for r in records], pa.string()),
        "source": pa.array([r.source for r in records], pa.string()),
        "fallback_reason": pa.array([r.fallback_reason for r in records], pa.string()),
        "latency_ms": pa.array([r.latency_ms for r in records], pa.float64()),
        "routing_key_hash": pa.array([hashed(r.routing_key, salt) for r in records], pa.string()),
    }
    for side in ("inputs", "outputs"):
        for name in getattr(records[0], side):
            tensors = [getattr(r, side)[name] for r in records]
            values = pa.array(
                [t.ravel() for t in tensors], pa.list_(pa.from_numpy_dtype(tensors[0].dtype))
            )
            columns[f"{side[:-1]}.{name}"] = values
            shapes = [list(t.shape) for t in tensors]
            columns[f"{side[:-1]}.{name}{SHAPE_SUFFIX}"] = pa.array(shapes, pa.list_(pa.int32()))
    return pa.table(columns)


def write_atomically(table: pa.Table, path: Path) -> None:
    """``table`` at ``path``, whole, or nothing there at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    with partial.open("wb") as sink:
        pq.write_table(table, sink, compression="zstd")
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(partial, path)


def files(root: Path, family: str) -> list[Path]:
    """Every complete file of ``family`` under ``root``, oldest first."""
    return sorted((root / family).rglob("*.parquet"), key=lambda p: (p.stat().st_mtime, p.name))


def read(root: Path, family: str, last: int | None = None) -> pa.Table | None:
    """The family's recorded requests (the ``last`` ones if given), or None if there are none."""
    tables: list[pa.Table] = []
    rows = 0
    for path in reversed(files(root, family)):
        tables.insert(0, pq.read_table(path))
        rows += tables[0].num_rows
        if last is not None and rows >= last:
            break
    if not tables:
        return None
    table = pa.concat_tables(tables).sort_by("at")
    return table if last is None else table.slice(max(table.num_rows - last, 0))


def tensors(table: pa.Table, side: str, row: int) -> dict[str, np.ndarray]:
    """Row ``row``'s tensors of one side ("input" or "output"), in their shapes."""
    prefix = f"{side}."
    out = {}
    for column in table.column_names:
        if column.startswith(prefix) and not column.endswith(SHAPE_SUFFIX):
            flat = table.column(column)[row].values.to_numpy(zero_copy_only=False)
            shape = table.column(column + SHAPE_SUFFIX)[row].as_py()
            out[column.removeprefix(prefix)] = flat.reshape(shape)
    return out


class Ledger:
    """Of one replica and family, in a mapped file: requests ``offered`` to the log,
    ``written`` to complete files, ``dropped`` at a full queue, ``failed`` to write."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+b") as handle:
            handle.truncate(_LEDGER.size)
            self._map = mmap.mmap(handle.fileno(), _LEDGER.size)
        self.offered, self.written, self.dropped, self.failed = _LEDGER.unpack_from(self._map)

    def add(self, offered: int = 0, written: int = 0, dropped: int = 0, failed: int = 0) -> None:
        # Each count has one writer thread (offered and dropped: the request path;
        # written and failed: the writer), and each is stored in its own slot, so
        # no thread ever writes back another's stale count.
        changes = (("offered", offered), ("written", written), ("dropped", dropped),
                   ("failed", failed))  # fmt: skip
        for slot, (name, change) in enumerate(changes):
            if change:
                value = getattr(self, name) + change
                setattr(self, name, value)
                _COUNT.pack_into(self._map, slot * _COUNT.size, value)

    def close(self) -> None:
        self._map.flush()
        self._map.close()


@dataclass(frozen=True)
class LedgerEntry:
    family: str
    replica: str
    offered: int
    written: int
    dropped: int
    failed: int

    @property
    def unwritten(self) -> int:
        """Offered, and neither written nor counted otherwise: still queued, or lost in a crash."""
        return self.offered - self.written - self.dropped - self.failed


def ledgers(root: Path) -> Iterator[LedgerEntry]:
    """Every replica's ledger under ``root``, alive or dead."""
    for path in sorted((root / LEDGER_DIR).glob("*/*.ledger")):
        data = path.read_bytes()
        if len(data) < _LEDGER.size:
            continue
        counts = _LEDGER.unpack_from(data)
        yield LedgerEntry(path.parent.name, path.stem, *counts)


def ledger_path(root: Path, family: str, replica: str) -> Path:
    return root / LEDGER_DIR / family / f"{replica}.ledger"
