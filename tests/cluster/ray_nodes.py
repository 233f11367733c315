"""Real Ray nodes on loopback, each its own `ray start` process, for the stack run
against them as a studio runs it (``GAMESERVE_RAY__ADDRESS``): the nodes, Ray's
state over the dashboard's HTTP, and the stack's environment."""

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from serving.runtime.ports import free_port

BIN = Path(sys.executable).parent
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

    def started(self, timeout_s: float = 60.0) -> None:
        """Return once `ray start` says the node runs; fail if it exits or takes longer."""
        deadline = time.monotonic() + timeout_s
        while not self.log.read_text().count("Ray runtime started"):
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"{self.log.name}: not started in {timeout_s} s"
            time.sleep(0.5)

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


def _with_env(name: str, value: str) -> list[int]:
    """The processes whose environment holds ``name=value`` (Linux /proc)."""
    wanted = f"{name}={value}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if wanted in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def stack_env(cluster: dict[str, Any], data_dir: Path, families: dict[str, Any]) -> dict[str, str]:
    """The stack's own environment on ``cluster``: the token, never the Serve knobs the
    nodes carry (a driver under RAY_SERVE_THROUGHPUT_OPTIMIZED cannot call handles
    from a thread); free ports; a quick training; ``families``' serving settings."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
        **TOKEN_AUTH,
        "GAMESERVE_DATA_DIR": str(data_dir),
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
        "GAMESERVE_SERVING__FAMILIES": json.dumps(families),
    }


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

    def workers(self, resource: str = "gpu_worker") -> set[str]:
        """Alive nodes that declare ``resource``."""
        return {
            node["node_id"]
            for node in self._list("nodes", state="ALIVE")
            if resource in node.get("resources_total", {})
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


def gameserve(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    done = subprocess.run(
        [str(BIN / "gameserve"), *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@contextlib.contextmanager
def ray_cluster(tmp_path: Path, workers: list[list[str]]) -> Iterator[dict[str, Any]]:
    """A head (CPUs only) and one node per entry of ``workers`` (its own `ray start`
    arguments, the address added); all stopped at the end."""
    gcs, dashboard = free_port(), free_port()
    # Short: Ray's socket paths live under it and must stay within 107 bytes.
    temp = Path(tempfile.mkdtemp(prefix="gs-ray-", dir="/tmp"))
    # What ray-cluster.yaml's `ray start` commands carry (Serve's HAProxy path behind the
    # hardening wrapper, Ray's token), with HAProxy's listeners on free ports here.
    # Ingress replicas serve HTTP on a port of their own, HAProxy's servers re-pointed to
    # it (ServeRuntime.replica_http_port): the nodes and the stack must agree on it.
    replica_http = {"GAMESERVE_SERVING__RUNTIME__REPLICA_HTTP_PORT": str(free_port())}
    printed = gameserve({**os.environ, **replica_http}, "build-config", "--ray-env")
    stats_port = str(free_port())  # in every process of this cluster's: how we find them
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
        **dict(shlex.split(line)[1].split("=", 1) for line in printed.splitlines()),
        "RAY_SERVE_HAPROXY_STATS_PORT": stats_port,
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        **FAST_HEALTH_CHECKS,
    }
    assert env["RAY_AUTH_MODE"] == TOKEN_AUTH["RAY_AUTH_MODE"]
    address = f"127.0.0.1:{gcs}"
    joining = [f"--address={address}", "--node-ip-address=127.0.0.1"]
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
        nodes[0].started()
        # One at a time: two workers starting at once on one machine, one timed out
        # registering with GCS ("Failed to get node info").
        for index, args in enumerate(workers, start=1):
            nodes.append(RayNode([*joining, *args], env, tmp_path / f"worker-{index}.log"))
            nodes[-1].started()
        yield {
            "address": address,
            "dashboard": f"http://127.0.0.1:{dashboard}",
            "env": env,
            "joining": joining,
            "nodes": nodes,
            "logs": tmp_path,
            "replica_http": replica_http,
        }
    finally:
        for node in nodes:  # all at once: each waits out its own grace
            node.signal(signal.SIGTERM)
        for node in nodes:
            node.wait()
        # An HAProxy that Serve reloaded (-sf) while its node stopped outlives it, adopted
        # by init (found after a CI run). Ours carry this cluster's stats port.
        for pid in set(_with_env("RAY_SERVE_HAPROXY_STATS_PORT", stats_port)) - {os.getpid()}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # Serve's own logs (the controller's decisions) outlive the cluster, for a failure.
        with contextlib.suppress(OSError):
            shutil.copytree(temp / "session_latest" / "logs" / "serve", tmp_path / "serve-logs")
        shutil.rmtree(temp, ignore_errors=True)
