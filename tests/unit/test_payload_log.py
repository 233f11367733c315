"""The payload log: whole files, counted drops, a ledger that outlives a SIGKILL."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from serving.dataplane import payload_log
from serving.dataplane.payload_files import (
    Record,
    files,
    hashed,
    ledgers,
    read,
    salt_from,
    tensors,
    write_atomically,
)
from serving.dataplane.payload_log import PayloadLog, PayloadLogConfig, new_request_id

NPC = "npc-behavior"


def record(i: int, rows: int = 2) -> Record:
    observation = np.full((rows, 40), i, dtype=np.float32)
    return Record(
        at_s=time.time(),
        request_id=new_request_id(),
        version="3",
        role="champion",
        source="model",
        fallback_reason=None,
        latency_ms=1.5,
        routing_key=f"match-{i}",
        inputs={"observation": observation},
        outputs={"action_probs": np.full((rows, 10), 0.1, dtype=np.float32)},
    )


def config(root: Path, **changes: object) -> PayloadLogConfig:
    base: dict[str, object] = {"root": root, "replica": "r1", "sample": lambda _: 1.0}
    return PayloadLogConfig(**{**base, **changes})  # type: ignore[arg-type]


def test_the_routing_key_hash_is_salted_by_the_stacks_secret(tmp_path: Path) -> None:
    """Knowing a player id is not enough to find its rows: the hash needs the stack's
    secret, and a new secret (a rotated signing key) gives new hashes."""
    salt = salt_from(b"the stack's signing key")
    log = PayloadLog(config(tmp_path, salt=salt))
    log.offer(NPC, record(3))
    log.close()
    table = read(tmp_path, NPC)
    assert table is not None
    written = table.column("routing_key_hash")[0].as_py()
    assert written == hashed("match-3", salt)
    assert written != hashed("match-3")  # unsalted: what anyone could compute
    assert written != hashed("match-3", salt_from(b"a rotated key"))
    assert salt != b"the stack's signing key"[:32]  # the files never carry the key itself


def test_records_come_back_whole_with_their_tensors(tmp_path: Path) -> None:
    log = PayloadLog(config(tmp_path, rotate_rows=4))
    for i in range(10):
        log.offer(NPC, record(i, rows=i % 3 + 1))
    log.close()  # what SIGTERM runs: the last 2 records are written too
    assert len(files(tmp_path, NPC)) == 3  # 4 + 4 + 2
    table = read(tmp_path, NPC)
    assert table is not None
    assert table.num_rows == 10
    third = tensors(table, "input", 3)["observation"]
    assert third.shape == (1, 40)
    assert (third == 3).all()
    assert tensors(table, "output", 3)["action_probs"].shape == (1, 10)
    assert table.column("routing_key_hash")[3].as_py() == hashed("match-3") != "match-3"
    last = read(tmp_path, NPC, last=3)
    assert last is not None
    assert [tensors(last, "input", r)["observation"][0, 0] for r in range(3)] == [7, 8, 9]
    [entry] = ledgers(tmp_path)
    assert (entry.offered, entry.written, entry.dropped, entry.unwritten) == (10, 10, 0, 0)
    assert log.counts()[(NPC, "written")] == 10


def test_a_full_queue_drops_and_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writing, release = threading.Event(), threading.Event()

    def held(*args: object) -> None:
        writing.set()
        release.wait(10)
        write_atomically(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(payload_log, "write_atomically", held)
    log = PayloadLog(config(tmp_path, rotate_rows=1, max_queue=5))
    log.offer(NPC, record(0))
    assert writing.wait(10)  # the writer is busy with the first record
    for i in range(1, 21):
        log.offer(NPC, record(i))
    release.set()
    log.close()
    counts = log.counts()
    assert (counts[(NPC, "offered")], counts[(NPC, "dropped")]) == (21, 15)
    assert (
        counts[(NPC, "written")]
        == 6
        == sum(pq.read_table(p).num_rows for p in files(tmp_path, NPC))
    )


def test_a_write_that_fails_is_counted_and_serving_goes_on(tmp_path: Path) -> None:
    (tmp_path / NPC).write_text("a file where the family's folder should be")
    log = PayloadLog(config(tmp_path, rotate_rows=1))
    log.offer(NPC, record(0))
    log.close()
    [entry] = ledgers(tmp_path)
    assert (entry.offered, entry.written, entry.failed, entry.unwritten) == (1, 0, 1, 0)


def test_after_a_sigkill_the_ledger_counts_what_died_in_memory(tmp_path: Path) -> None:
    child = os.fork()
    if child == 0:  # the replica: logs 7 requests, writes none of them, dies hard
        log = PayloadLog(config(tmp_path, replica="victim", rotate_s=3600))
        for i in range(7):
            log.offer(NPC, record(i))
        os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL
    [entry] = ledgers(tmp_path)
    assert (entry.replica, entry.offered, entry.written, entry.unwritten) == ("victim", 7, 0, 7)


def test_a_partial_file_is_never_read(tmp_path: Path) -> None:
    log = PayloadLog(config(tmp_path))
    log.offer(NPC, record(0))
    log.close()
    [whole] = files(tmp_path, NPC)
    whole.with_name("r2-000001.parquet.tmp").write_bytes(whole.read_bytes()[:100])
    assert files(tmp_path, NPC) == [whole]
    table = read(tmp_path, NPC)
    assert table is not None
    assert table.num_rows == 1
