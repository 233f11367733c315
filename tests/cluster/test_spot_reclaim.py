"""A spot node reclaimed under load, on real `ray start` nodes: nothing fails.

Two workers stand in for GPU nodes (``gpu_worker``): one on demand, one labelled
``gameserve.io/market=spot``. Personalization may run on spot (its declaration
says so) and keeps one replica on each. A cloud's reclaim is played as KubeRay's
preStop plays it (``pipelines/deploy_config.py``): ``ray drain-node`` with the
grace as its deadline, then SIGTERM to the node, then SIGKILL. Meanwhile the
autoscaler's part, a new on-demand node, is started by hand. Serve starts the
spot replica's replacement there and stops the old one gracefully (its
in-flight calls finish; the shutdown grace is the family's ``shutdown_grace_s``)
before the node goes, if the replacement runs in time; if not, the old replica serves
until the node is killed and the ingress answers what it held by the fallback. Game
servers play throughout and no request fails.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from serving.settings import MARKET_LABEL
from tests.cluster.ray_nodes import BIN, RayNode, State, gameserve, ray_cluster, stack_env
from tests.e2e.load import Load, Outcome
from tests.payloads import rank_request

FAMILY = "personalization"
GRACE_S = 30  # the spot group's terminationGracePeriodSeconds
RANKING = rank_request(16)
# No CPU on either: only the family's replicas land there, never an ingress.
ON_DEMAND = ["--num-cpus=0", '--resources={"gpu_worker": 1}', f"--labels={MARKET_LABEL}=on_demand"]
SPOT = [
    "--num-cpus=0",
    '--resources={"gpu_worker": 1, "spot_node": 1}',
    f"--labels={MARKET_LABEL}=spot",
]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with ray_cluster(tmp_path, [ON_DEMAND, SPOT]) as started:
        yield started


def rank(session: requests.Session, url: str, player: str, _: random.Random) -> Outcome:
    """One ranking; its ``detail`` says what answered: model, fallback, or refused (a
    fast 503 with Retry-After, a client's use_local). Anything else is a failure."""
    answer = session.post(f"{url}/v1/personalization/rank", json=RANKING, timeout=10)
    if answer.ok:
        return Outcome(player, 200, None, True, str(answer.json()["source"]))
    refused = answer.status_code in (429, 503) and "Retry-After" in answer.headers
    return Outcome(player, answer.status_code, None, refused, "refused" if refused else "")


def between(outcomes: list[Outcome], start_s: float, end_s: float) -> Counter[str]:
    return Counter(o.detail or f"http {o.status}" for o in outcomes if start_s <= o.sent_s < end_s)


def _drain(cluster: dict[str, Any], node_id: str) -> None:
    """What the spot pod's preStop runs first: Ray hears the node will go."""
    subprocess.run(
        [str(BIN / "ray"), "drain-node", f"--address={cluster['address']}",
         f"--node-id={node_id}", "--reason=DRAIN_NODE_REASON_PREEMPTION",
         "--reason-message=spot reclaim", f"--deadline-remaining-seconds={GRACE_S}"],
        env=cluster["env"], check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def test_a_spot_node_reclaimed_under_load_drains_with_no_failed_request(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    ray_state = State(cluster["dashboard"])
    deadline = time.monotonic() + 60
    while len(ray_state.workers()) < 2 or not ray_state.workers("spot_node"):
        assert time.monotonic() < deadline, "the worker nodes did not join in 60 s"
        time.sleep(0.5)
    (spot,) = ray_state.workers("spot_node")
    families = {
        FAMILY: {"resources": {"gpu_worker": 1}, "num_cpus": 0, "scaling": "fixed",
                 "num_replicas": 2}
    }  # fmt: skip
    env = stack_env(cluster, tmp_path / "stack", families)
    gameserve(env, "up", "--detach")
    try:
        key = (tmp_path / "stack" / "admin.key").read_text().strip()
        url = f"http://127.0.0.1:{env['GAMESERVE_SERVING__PORT']}"
        # Patient: on two cores a ranking may take longer than its 100 ms; a fallback
        # here would hide whether the model still answers through the reclaim.
        headers = {"Authorization": f"Bearer {key}", "X-Deadline-Ms": "2000"}
        deadline = time.monotonic() + 60
        while spot not in ray_state.replica_nodes(FAMILY):
            assert time.monotonic() < deadline, ray_state.replica_nodes(FAMILY)
            time.sleep(0.5)
        # Two game servers, each keeping its connection.
        with Load(url, workers=2, headers=headers, call=rank, max_s=240) as servers:
            time.sleep(5)
            drained_at = servers.now_s()
            _drain(cluster, spot)
            # The autoscaler's answer to the replacement's demand: a new on-demand node.
            cluster["nodes"].append(
                RayNode([*cluster["joining"], *ON_DEMAND], cluster["env"],
                        cluster["logs"] / "worker-3.log")
            )  # fmt: skip
            # The preStop sleeps out the grace less 5 s, then the node gets SIGTERM and,
            # 5 s later, SIGKILL. Serve stops the old replica once its replacement runs.
            while spot in ray_state.replica_nodes(FAMILY):
                if servers.now_s() - drained_at >= GRACE_S - 5:
                    break
                time.sleep(0.25)
            moved_s = servers.now_s() - drained_at
            reclaimed = cluster["nodes"][2]
            reclaimed.signal(signal.SIGTERM)
            reclaimed.wait(grace_s=5.0)
            gone_at = servers.now_s()
            deadline = time.monotonic() + 60
            while len(replicas := ray_state.replica_nodes(FAMILY)) < 2 or spot in replicas:
                assert time.monotonic() < deadline, replicas
                time.sleep(0.5)
            time.sleep(5)
    finally:
        gameserve(env, "down", timeout=180)
    outcomes = servers.snapshot()
    before = between(outcomes, 0, drained_at)
    during = between(outcomes, drained_at, gone_at)
    after = between(outcomes, gone_at, servers.now_s())
    moved = "moved off" if moved_s < GRACE_S - 5 else "still there at SIGTERM"
    print(f"\nspot reclaim: the replica {moved} {moved_s:.1f} s after the drain; before "
          f"{dict(before)}, during {dict(during)}, after {dict(after)}")  # fmt: skip
    every = before + during + after
    assert set(every) <= {"model", "fallback", "refused"}, every  # no request failed
    assert before["model"] > 0, before
    assert after["model"] > 0, after
