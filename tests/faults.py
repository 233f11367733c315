"""Faults under load: bounded continuous load, every request counted at the client.

A scenario kills a process this session started (by PID) or damages a file,
keeps the load running until the platform has recovered, and prints requests
sent, failed, and seconds to recover.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ray.util.state import list_actors

from serving.app.gateway import ServeGateway
from tests.auth import TestKeys
from tests.e2e.load import Load

RECOVERY_LIMIT_S = 120.0


def alive(class_name: str) -> list[int]:
    """PIDs of this Ray's live actors of one class."""
    actors = list_actors(filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")])
    return sorted(actor.pid for actor in actors if actor.pid is not None)


def ingress_pids(served: ServeGateway) -> list[int]:
    return alive(f"ServeReplica:{served.settings.app_name}:ingress")


def under_load(
    served: ServeGateway,
    test_keys: TestKeys,
    fault: Callable[[], None],
    recovered: Callable[[], bool],
    name: str,
) -> tuple[int, int, float]:
    """(requests sent, failed, seconds from the fault to ``recovered()``)."""
    with Load(
        served.url, workers=4, max_s=RECOVERY_LIMIT_S + 60, headers=test_keys.headers
    ) as load:
        time.sleep(2.0)
        fault()
        struck = time.monotonic()
        while not recovered():
            assert time.monotonic() - struck < RECOVERY_LIMIT_S, f"{name}: no recovery"
            time.sleep(0.25)
        recovery_s = time.monotonic() - struck
        time.sleep(2.0)  # and it keeps answering afterwards
    sent, failed = len(load.snapshot()), len(load.failures)
    print(f"\n{name}: {sent} requests sent, {failed} failed, recovered in {recovery_s:.1f} s")
    for outcome in load.failures[:5]:  # what the next person needs to chase them
        print(f"  failed: status {outcome.status}: {outcome.detail}")
    return sent, failed, recovery_s
