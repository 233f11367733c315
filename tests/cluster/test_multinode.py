"""Two real Ray nodes on loopback, each its own `ray start` process, and the stack
run against them as a studio runs it (``GAMESERVE_RAY__ADDRESS``).

The second node declares a ``gpu_worker`` resource (standing in for a GPU), and
difficulty-tuning asks for it, so its replica can only run there. The test shows
that replica answering, kills the node, keeps playing through the loss (the
fallback answers), and starts a new node with the resource: the replica returns.
HTTP reaches the ingress replicas' own servers (``runtime.replica_http_port``),
as the nodes' HAProxy is told to by ``gameserve build-config --ray-env``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.cluster.ray_nodes import RayNode, State, gameserve, ray_cluster, stack_env
from tests.payloads import difficulty_request

DIFFICULTY = "difficulty-tuning"
WORKER = ["--num-cpus=1", '--resources={"gpu_worker": 1}']


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A head (CPUs only) and a worker with ``gpu_worker``; both stopped at the end."""
    with ray_cluster(tmp_path, [WORKER]) as started:
        yield started


def _play(url: str, headers: dict[str, str], count: int) -> Counter[str]:
    """``count`` difficulty requests; what answered each (model, fallback, or an error)."""
    seen: Counter[str] = Counter()
    for _ in range(count):
        response = requests.post(
            f"{url}/v1/difficulty/recommend",
            json=difficulty_request(1),
            headers=headers,
            timeout=30,
        )
        if response.ok:
            seen[response.json()["source"]] += 1
        else:  # the error's code too: a 503 may be the edge's use_local or an overload
            code = response.json().get("error", {}).get("code", "") if _is_json(response) else ""
            seen[f"http {response.status_code} {code}".rstrip()] += 1
    return seen


def _is_json(response: requests.Response) -> bool:
    return response.headers.get("content-type", "").startswith("application/json")


def test_replicas_on_a_second_node_serve_survive_its_loss_and_return_with_a_new_one(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    ray_state = State(cluster["dashboard"])
    deadline = time.monotonic() + 60
    while not (first := ray_state.workers()):
        assert time.monotonic() < deadline, "the worker node did not join in 60 s"
        time.sleep(0.5)

    # Difficulty only where the resource is; its replica count fixed at one.
    families = {DIFFICULTY: {"resources": {"gpu_worker": 1}, "scaling": "fixed"}}
    env = stack_env(cluster, tmp_path / "stack", families)
    started = time.monotonic()
    gameserve(env, "up", "--detach")
    print(f"\nstack up on two nodes in {time.monotonic() - started:.0f} s")
    sent = failed = 0
    try:
        state = json.loads((tmp_path / "stack" / "stack.json").read_text())
        key = (tmp_path / "stack" / "admin.key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        # Patient at first: a fresh replica's first calls may take longer than 50 ms.
        patient = {**headers, "X-Deadline-Ms": "2000"}
        url = state["api_url"]
        # The ingress replicas' own HTTP server, where HAProxy's servers point.
        own_port = cluster["replica_http"]["GAMESERVE_SERVING__RUNTIME__REPLICA_HTTP_PORT"]
        assert requests.get(f"http://127.0.0.1:{own_port}/-/healthz", timeout=10).ok

        # Its one replica is on the worker node, and it is what answers.
        assert ray_state.replica_nodes(DIFFICULTY) == sorted(first)
        answered = _play(url, patient, 20)
        sent += 20
        assert answered == {"model": 20}, answered

        cluster["nodes"][1].lose()
        lost = time.monotonic()
        deadline = time.monotonic() + 60
        while ray_state.workers() and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not ray_state.workers(), "Ray never noticed the node was gone"
        print(f"Ray saw the node gone {time.monotonic() - lost:.1f} s after its loss")
        during = _play(url, headers, 20)
        sent += 20
        failed += sum(n for source, n in during.items() if source.startswith("http"))
        print(f"\nwith the worker node gone: {dict(during)}")
        assert set(during) == {"fallback"}, during  # every request answered, by the fallback

        cluster["nodes"].append(
            RayNode(
                [*cluster["joining"], *WORKER], cluster["env"], cluster["logs"] / "worker-2.log"
            )
        )
        joined = time.monotonic()
        returned: Counter[str] = Counter()
        deadline = time.monotonic() + 120
        while returned["model"] < 10 and time.monotonic() < deadline:
            returned += _play(url, headers, 5)
            time.sleep(0.25)
        sent += sum(returned.values())
        failed += sum(n for source, n in returned.items() if source.startswith("http"))
        second = ray_state.workers()
        assert second, "no node with gpu_worker rejoined"
        assert second.isdisjoint(first), (first, second)
        assert ray_state.replica_nodes(DIFFICULTY) == sorted(second)
        print(
            f"a new node started; the model answered again within "
            f"{time.monotonic() - joined:.0f} s: {dict(returned)}"
        )
        assert returned["model"] >= 10, returned
        assert failed == 0
    finally:
        print(f"requests sent {sent}, failed {failed}")
        stopping = time.monotonic()
        gameserve(env, "down", timeout=180)
        print(f"stack down in {time.monotonic() - stopping:.0f} s")
    # A cluster is shared: `down` deleted gameserve's application, not Serve itself
    # (serve.shutdown would stop every other application on it too).
    deadline = time.monotonic() + 30
    while ray_state.replica_nodes(DIFFICULTY) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray_state.replica_nodes(DIFFICULTY) == []
    assert ray_state.serve_controller_alive()
