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

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from serving.runtime.ports import free_port
from tests.payloads import difficulty_request

BIN = Path(sys.executable).parent
DIFFICULTY = "difficulty-tuning"
# Ray's token on every process, as on a real cluster: `ray start` and each driver that
# connects by address (the stack) read it from ~/.ray/auth_token.
TOKEN_AUTH = {"RAY_AUTH_MODE": "token"}
# GCS notices a dead node within ~2 s, not Ray's default ~30 s.
FAST_HEALTH_CHECKS = {
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "4",
}


class RayNode:
    """One `ray start --block` in a session of its own: stopping it stops what it started."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [str(BIN / "ray"), "start", "--block", *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def lose(self) -> None:
        """Everything this node started dies at once, as on a lost VM: SIGKILL to its
        process group and to every descendant (Ray starts workers in groups of their own)."""
        family = _descendants(self.process.pid)
        self.signal(signal.SIGKILL)
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.wait()

    def signal(self, sig: signal.Signals) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def wait(self, grace_s: float = 5.0) -> None:
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def _descendants(root: int) -> list[int]:
    """Every process below ``root``, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, frontier = [], [root]
    while frontier:
        below = children.get(frontier.pop(), [])
        found += below
        frontier += below
    return found


class State:
    """Ray's state API over the dashboard's HTTP, with the cluster's token: what the test
    asks Ray, in milliseconds (a driver connecting per question took seconds)."""

    def __init__(self, dashboard: str) -> None:
        self.dashboard = dashboard
        token = (Path.home() / ".ray" / "auth_token").read_text().strip()
        self.headers = {"Authorization": f"Bearer {token}"}

    def _list(self, kind: str, **filters: str) -> list[dict[str, Any]]:
        params: list[tuple[str, str]] = [("limit", "10000")]
        for key, value in filters.items():
            params += [("filter_keys", key), ("filter_predicates", "="), ("filter_values", value)]
        answer = requests.get(
            f"{self.dashboard}/api/v0/{kind}", params=params, headers=self.headers, timeout=30
        )
        answer.raise_for_status()
        rows: list[dict[str, Any]] = answer.json()["data"]["result"]["result"]
        return rows

    def workers(self) -> set[str]:
        """Alive nodes that declare ``gpu_worker``."""
        return {
            node["node_id"]
            for node in self._list("nodes", state="ALIVE")
            if "gpu_worker" in node.get("resources_total", {})
        }

    def serve_controller_alive(self) -> bool:
        return any(
            (actor.get("name") or "") == "SERVE_CONTROLLER_ACTOR"
            for actor in self._list("actors", state="ALIVE")
        )

    def replica_nodes(self, deployment: str) -> list[str]:
        """The node of each alive replica of ``deployment`` (each replica is an actor)."""
        prefix = f"SERVE_REPLICA::gameserve#{deployment}#"
        return sorted(
            actor["node_id"]
            for actor in self._list("actors", state="ALIVE")
            if (actor.get("name") or "").startswith(prefix)
        )


def _gameserve(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    done = subprocess.run(
        [str(BIN / "gameserve"), *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A head (CPUs only) and a worker with ``gpu_worker``; both stopped at the end."""
    gcs, dashboard = free_port(), free_port()
    # Short: Ray's socket paths live under it and must stay within 107 bytes.
    temp = Path(tempfile.mkdtemp(prefix="gs-ray-", dir="/tmp"))
    # What ray-cluster.yaml's `ray start` commands carry (Serve's HAProxy path behind the
    # hardening wrapper, Ray's token), with HAProxy's listeners on free ports here.
    # Ingress replicas serve HTTP on a port of their own, HAProxy's servers re-pointed to
    # it (ServeRuntime.replica_http_port): the nodes and the stack must agree on it.
    replica_http = {"GAMESERVE_SERVING__RUNTIME__REPLICA_HTTP_PORT": str(free_port())}
    printed = _gameserve({**os.environ, **replica_http}, "build-config", "--ray-env")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
        **dict(shlex.split(line)[1].split("=", 1) for line in printed.splitlines()),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        **FAST_HEALTH_CHECKS,
    }
    assert env["RAY_AUTH_MODE"] == TOKEN_AUTH["RAY_AUTH_MODE"]
    address = f"127.0.0.1:{gcs}"
    worker_args = [
        f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
        '--resources={"gpu_worker": 1}',
    ]  # fmt: skip
    nodes = [
        RayNode(
            [
                "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=3",
                "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}", f"--temp-dir={temp}",
            ],
            env, tmp_path / "head.log",
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "head.log").read_text().count("Ray runtime started"):
            assert nodes[0].process.poll() is None, (tmp_path / "head.log").read_text()
            assert time.monotonic() < deadline, "the head did not start in 60 s"
            time.sleep(0.5)
        nodes.append(RayNode(worker_args, env, tmp_path / "worker-1.log"))
        yield {
            "address": address,
            "dashboard": f"http://127.0.0.1:{dashboard}",
            "env": env,
            "worker_args": worker_args,
            "nodes": nodes,
            "logs": tmp_path,
            "replica_http": replica_http,
        }
    finally:
        for node in nodes:  # all at once: each waits out its own grace
            node.signal(signal.SIGTERM)
        for node in nodes:
            node.wait()
        shutil.rmtree(temp, ignore_errors=True)


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

    # The stack's own environment: the token, never the Serve knobs the nodes carry (a
    # driver under RAY_SERVE_THROUGHPUT_OPTIMIZED cannot call handles from a thread).
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
        **TOKEN_AUTH,
        "GAMESERVE_DATA_DIR": str(tmp_path / "stack"),
        "GAMESERVE_RAY__ADDRESS": cluster["address"],
        "GAMESERVE_RAY__DASHBOARD_ADDRESS": cluster["dashboard"],
        "GAMESERVE_TRACKING__PORT": str(free_port()),
        "GAMESERVE_SERVING__PORT": str(free_port()),
        "GAMESERVE_SERVING__GRPC__PORT": str(free_port()),
        "GAMESERVE_SERVING__ADMIN__PORT": str(free_port()),
        **cluster["replica_http"],
        "GAMESERVE_TRAIN__TRAIN_SAMPLES": "1000",
        "GAMESERVE_TRAIN__EPOCHS": "1",
        "GAMESERVE_TRAIN__EVAL_SAMPLES": "500",
        # Difficulty only where the resource is; its replica count fixed at one.
        "GAMESERVE_SERVING__FAMILIES": json.dumps(
            {DIFFICULTY: {"resources": {"gpu_worker": 1}, "scaling": "fixed"}}
        ),
    }
    started = time.monotonic()
    _gameserve(env, "up", "--detach")
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
            RayNode(cluster["worker_args"], cluster["env"], cluster["logs"] / "worker-2.log")
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
        _gameserve(env, "down", timeout=180)
        print(f"stack down in {time.monotonic() - stopping:.0f} s")
    # A cluster is shared: `down` deleted gameserve's application, not Serve itself
    # (serve.shutdown would stop every other application on it too).
    deadline = time.monotonic() + 30
    while ray_state.replica_nodes(DIFFICULTY) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray_state.replica_nodes(DIFFICULTY) == []
    assert ray_state.serve_controller_alive()
