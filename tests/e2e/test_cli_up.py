"""The local stack as a person runs it: real processes, real sockets, real signals."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton

from models import FAMILIES, trainable_family
from models.training import TrainSettings
from pipelines.registry import connect_to_stack
from pipelines.rollout.state import Phase, RolloutState, RolloutStore
from pipelines.settings import Settings
from pipelines.tracking_server import MlflowCredentials
from pipelines.training import train_and_register
from serving.dataplane.payload_files import ledgers, read
from serving.runtime.ports import free_port, port_in_use
from tests.e2e.load import Load
from tests.scrape import scrape, values

GAMESERVE = shutil.which("gameserve", path=str(Path(sys.executable).parent)) or "gameserve"
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One data directory for the module: later tests reuse its champions."""
    assert GAMESERVE, "the gameserve console script is not installed"
    return {
        **os.environ,
        "GAMESERVE_DATA_DIR": str(tmp_path_factory.mktemp("stack")),
        "GAMESERVE_TRACKING__PORT": str(free_port()),
        "GAMESERVE_SERVING__PORT": str(free_port()),
        "GAMESERVE_SERVING__GRPC__PORT": str(free_port()),
        # The session's Ray serves its replicas' HTTP on a port of its own (tests/conftest.py).
        "GAMESERVE_SERVING__RUNTIME__REPLICA_HTTP_PORT": str(free_port()),
        "GAMESERVE_RAY__DASHBOARD_PORT": str(free_port()),
        "GAMESERVE_SERVING__ADMIN__PORT": str(free_port()),
        "GAMESERVE_TRAIN__TRAIN_SAMPLES": "2000",
        "GAMESERVE_TRAIN__EPOCHS": "1",
        "GAMESERVE_TRAIN__EVAL_SAMPLES": "500",
        # Every answer recorded, and no file rotated while the stack runs: what is
        # on disk after `down` is what its SIGTERM flushed.
        "GAMESERVE_SERVING__PAYLOAD_LOG__SAMPLE": "1.0",
        "GAMESERVE_SERVING__PAYLOAD_LOG__ROTATE_S": "3600",
    }


def _gameserve(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    done = subprocess.run(
        [GAMESERVE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _readme_curl() -> tuple[str, dict[str, Any]]:
    """The README's curl: the key file its Authorization header reads, and its body."""
    match = re.search(
        r"curl -s -X POST \S+/v1/npc/act -H \"Authorization: Bearer \$\(cat \.gameserve/(\S+)\)\""
        r" .* -d '(.+)'",
        README.read_text(),
    )
    assert match, "the README shows no curl with a key for /v1/npc/act"
    body: dict[str, object] = json.loads(match.group(2))
    return match.group(1), body


def _ports(env: dict[str, str]) -> list[int]:
    keys = (
        "GAMESERVE_TRACKING__PORT",
        "GAMESERVE_SERVING__PORT",
        "GAMESERVE_RAY__DASHBOARD_PORT",
        "GAMESERVE_SERVING__ADMIN__PORT",
        "GAMESERVE_SERVING__GRPC__PORT",
        "GAMESERVE_SERVING__RUNTIME__REPLICA_HTTP_PORT",
    )
    return [int(env[key]) for key in keys]


def test_detached_stack_serves_the_readme_curl_and_tritonclient(stack_env: dict[str, str]) -> None:
    started = _gameserve(stack_env, "up", "--detach")
    state = json.loads((Path(stack_env["GAMESERVE_DATA_DIR"]) / "stack.json").read_text())
    try:
        assert "gameserve is up" in started
        api = state["api_url"]
        key_name, readme_body = _readme_curl()
        key_path = Path(stack_env["GAMESERVE_DATA_DIR"]) / key_name
        assert f"admin key was created in {key_path}" in (key_path.parent / "stack.log").read_text()
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        auth = {"Authorization": f"Bearer {key_path.read_text().strip()}"}
        # A patient deadline: the version that answers is under test, and a fresh
        # stack's first call may take longer than an NPC's 20 ms.
        patient = {**auth, "X-Deadline-Ms": "5000"}
        # A second, foreground start in the same folder refuses before it touches this
        # stack (it once stopped this stack's HAProxy as a killed stack's leftover).
        second = subprocess.run(
            [GAMESERVE, "up"], env=stack_env, capture_output=True, text=True, timeout=120
        )
        assert second.returncode != 0
        assert f"already runs from {stack_env['GAMESERVE_DATA_DIR']}" in (
            second.stdout + second.stderr
        )
        refused = requests.post(f"{api}/v1/npc/act", json=readme_body, timeout=30)
        assert refused.status_code == 401, refused.text  # the API kept serving throughout
        decision = requests.post(f"{api}/v1/npc/act", json=readme_body, headers=patient, timeout=30)
        assert decision.status_code == 200, decision.text
        body = decision.json()
        assert body["model"] == {
            "name": "npc-behavior",
            "version": state["champions"]["npc-behavior"],
        }
        assert body["decisions"][0]["npc_id"] == "guard-1"

        client = triton.InferenceServerClient(url=api.removeprefix("http://"))
        assert client.is_server_ready()  # open: probes and load balancers send no key
        observation = trainable_family("npc-behavior").example_inputs(rows=3)["observation"]
        tensor = triton.InferInput("observation", [3, 40], "FP32")
        tensor.set_data_from_numpy(observation, binary_data=True)
        probs = client.infer("npc-behavior", [tensor], headers=auth).as_numpy("action_probs")
        with pytest.raises(triton.InferenceServerException, match="unknown or revoked"):
            client.infer("npc-behavior", [tensor], headers={"Authorization": "Bearer gsk_x_y"})
        # The same decision over OIP v2 gRPC, from every ingress replica on the port.
        assert state["grpc_address"] == f"127.0.0.1:{stack_env['GAMESERVE_SERVING__GRPC__PORT']}"
        grpc_tensor = triton_grpc.InferInput("observation", [3, 40], "FP32")
        grpc_tensor.set_data_from_numpy(observation)
        for _ in range(4):  # a new channel each time: the kernel picks the replica
            with triton_grpc.InferenceServerClient(state["grpc_address"]) as grpc_client:
                grpc_auth = {"authorization": auth["Authorization"]}
                answer = grpc_client.infer("npc-behavior", [grpc_tensor], headers=grpc_auth)
                np.testing.assert_allclose(answer.as_numpy("action_probs"), probs, rtol=1e-5)

        # A key made from the CLI works at once; revoked, it stops within seconds.
        made = _gameserve(stack_env, "keys", "create", "game-01", "--scopes", "infer")
        game = {"Authorization": f"Bearer {made.strip().splitlines()[-1]}"}
        act = f"{api}/v1/npc/act"
        assert requests.post(act, json=readme_body, headers=game, timeout=30).ok
        forbidden = requests.get(f"{api}/v1/models", headers=game, timeout=30)
        assert forbidden.status_code == 403
        assert "game-01" in _gameserve(stack_env, "keys", "list")
        _gameserve(stack_env, "keys", "revoke", "game-01")
        deadline = time.monotonic() + 10
        while requests.post(act, json=readme_body, headers=game, timeout=30).ok:
            assert time.monotonic() < deadline, "a revoked key still works after 10 s"
            time.sleep(0.2)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        client.close()

        status = _gameserve(stack_env, "status")
        for name, version in state["champions"].items():
            # CPU families run in each of the ingress replicas (two by default).
            assert re.search(rf"{name}\s+{version}\s+2\s+cpu\s+True", status), status
        # MLflow answers the stack's credentials only: the takeover's calls get a 401.
        alias_api = f"{state['tracking_uri']}/api/2.0/mlflow/registered-models/alias"
        login = MlflowCredentials.at(
            Path(stack_env["GAMESERVE_DATA_DIR"]) / "mlflow-credentials.json"
        )
        for name in FAMILIES:
            query = {"name": name, "alias": "champion"}
            anonymous = requests.get(alias_api, params=query, timeout=10)
            assert anonymous.status_code == 401
            owner = requests.get(alias_api, params=query, auth=login.auth(), timeout=10)
            assert owner.json()["model_version"]["version"] == state["champions"][name]
        assert "champion" in _gameserve(stack_env, "models")
        # Scripts get the same as JSON.
        report = json.loads(_gameserve(stack_env, "status", "--json"))
        assert (report["running"], report["metrics_url"]) == (True, f"{api}/metrics")
        # The ingress's demand forecast, on its default terms: quiet, so the floor is min.
        assert report["forecast"]["ingress_floor"] == 2, report["forecast"]
        assert "Forecast:" in status, status
        assert {m["name"]: m["version"] for m in report["models"]} == state["champions"]
        listed = json.loads(_gameserve(stack_env, "models", "--json"))
        champions = {v["family"]: v["version"] for v in listed if "champion" in v["aliases"]}
        assert champions == state["champions"]
        reader = {"Authorization": auth["Authorization"]}  # tritonclient wrote into ``auth``
        answered = values(scrape(api, reader), "gameserve_requests_total", family="npc-behavior")
        assert sum(s.value for s in answered if s.labels["code"] == "ok") >= 2

        # Operators steer through the stack's admin API with the admin key.
        npc = state["champions"]["npc-behavior"]
        admin_url = f"http://127.0.0.1:{stack_env['GAMESERVE_SERVING__ADMIN__PORT']}"
        assert state["admin_url"] == admin_url
        assert f"npc-behavior: champion is v{npc}" in _gameserve(
            stack_env, "champion", "set", "npc-behavior", npc
        )
        assert re.search(
            rf"champion\s+{npc}", _gameserve(stack_env, "rollout", "status", "npc-behavior")
        )
        rollout = json.loads(_gameserve(stack_env, "rollout", "status", "npc-behavior", "--json"))
        assert rollout["aliases"]["champion"] == npc
        watched = _gameserve(stack_env, "rollout", "status", "npc-behavior", "--watch")
        assert "npc-behavior: no rollout has run" in watched
        anonymous = requests.post(
            f"{admin_url}/v1/admin/families/npc-behavior/rollback", timeout=10
        )
        assert anonymous.status_code == 401
    finally:
        stopped = _gameserve(stack_env, "down", timeout=180)
    assert "gameserve stopped" in stopped
    assert not any(port_in_use("127.0.0.1", port) for port in _ports(stack_env))
    # SIGTERM flushed every ingress replica's payload log: all offered, all written.
    payloads = Path(stack_env["GAMESERVE_DATA_DIR"]) / "payloads"
    entries = [e for e in ledgers(payloads) if e.family == "npc-behavior"]
    assert sum(e.offered for e in entries) >= 3, entries
    assert all(e.unwritten == 0 for e in entries), entries
    recorded = read(payloads, "npc-behavior")
    assert recorded is not None
    assert recorded.num_rows == sum(e.written for e in entries)
    assert set(recorded.column("source").to_pylist()) <= {"model", "fallback"}
    assert (
        "not running"
        in subprocess.run(
            [GAMESERVE, "status"], env=stack_env, capture_output=True, text=True, check=False
        ).stdout
    )


@pytest.fixture
def foreground(
    stack_env: dict[str, str],
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts `gameserve up` in the foreground when called; killed if a test leaves it."""
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [GAMESERVE, "up"], env=env or stack_env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)


# A rollout whose first step passes on a few seconds of traffic and whose second
# bakes for an hour: the SIGKILL lands in the second.
RESUMED_PLAN = {
    "steps": [
        {"name": "shadow", "weight": 0.0, "shadow": 1.0, "bake_s": 1.0},
        {"name": "10%", "weight": 0.1, "bake_s": 3600.0},
    ],
    "thresholds": {
        "min_requests": 10, "min_latency_samples": 10, "max_p99_ratio": 100.0,
        "p99_slack_ms": 1000.0, "max_divergence": 1.0,
    },
    "preflight": {"enabled": False},
}  # fmt: skip
NPC = "npc-behavior"


def _rollout_state(data_dir: Path) -> RolloutState | None:
    return RolloutStore(data_dir / "rollouts").load(NPC)


def _challenger_at_second_step(env: dict[str, str], data_dir: Path, api_url: str) -> RolloutState:
    """Register a challenger as a data scientist would, start its rollout through the
    CLI, and send NPC calls until the controller saves its second step's traffic."""
    settings = Settings(data_dir=data_dir)
    registry = connect_to_stack(settings)
    budget = TrainSettings(train_samples=2000, eval_samples=500, epochs=1, seed=3)
    version = train_and_register(trainable_family(NPC), budget, registry).version
    _gameserve(env, "rollout", "start", NPC, version)
    key_file, body = _readme_curl()
    headers = {
        "Authorization": f"Bearer {(data_dir / key_file).read_text().strip()}",
        "X-Deadline-Ms": "5000",
    }
    deadline = time.monotonic() + 180
    with requests.Session() as session:
        while True:
            state = _rollout_state(data_dir)
            if state is not None and state.step == 1 and state.step_started is not None:
                assert state.challenger == version
                return state
            assert time.monotonic() < deadline, (
                f"the rollout never reached its second step: {state}"
            )
            answer = session.post(f"{api_url}/v1/npc/act", json=body, headers=headers, timeout=30)
            assert answer.status_code == 200, answer.text


def test_a_sigkilled_stack_leaves_nothing_and_a_foreground_start_comes_up_and_stops_on_ctrl_c(
    stack_env: dict[str, str], foreground: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """Scenario: `gameserve up` SIGKILLed mid-rollout, under load. MLflow and the admin
    API die with it; Ray, Serve and HAProxy run as their own process tree and serve on,
    with no failed call. The next start reattaches to them, reusing the champions,
    and resumes the rollout at the step it was in, with its window (same MLflow run,
    no earlier step again); Ctrl-C then stops everything, Ray included."""
    data_dir = Path(stack_env["GAMESERVE_DATA_DIR"])
    state_file = data_dir / "stack.json"
    env = {**stack_env, "GAMESERVE_ROLLOUT__FAMILIES": json.dumps({NPC: RESUMED_PLAN})}
    _gameserve(env, "up", "--detach")
    state = json.loads(state_file.read_text())
    before = _challenger_at_second_step(env, data_dir, state["api_url"])
    key = (data_dir / "admin.key").read_text().strip()
    # Patient: what is judged is the control process's death, not an NPC's 20 ms on
    # two cores that also restart MLflow and the stack.
    headers = {"Authorization": f"Bearer {key}", "X-Deadline-Ms": "5000"}
    with Load(state["api_url"], workers=2, max_s=400, headers=headers) as load:
        time.sleep(1.0)
        os.kill(state["pid"], signal.SIGKILL)
        killed = time.monotonic()
        tracking, serving, dashboard, admin, grpc_port, replica_port = _ports(stack_env)
        deadline = killed + 60
        # MLflow and the admin API die with the stack process; serving does not.
        while any(port_in_use("127.0.0.1", p) for p in (tracking, admin)):
            assert time.monotonic() < deadline, "MLflow or the admin API up 60 s after SIGKILL"
            time.sleep(0.5)
        serving_ports = (serving, grpc_port, replica_port, dashboard)
        assert all(port_in_use("127.0.0.1", p) for p in serving_ports)
        status = subprocess.run(
            [GAMESERVE, "status"], env=stack_env, capture_output=True, text=True, check=False
        ).stdout
        assert "stale state file" in status
        assert "Serving continues" in status
        time.sleep(2.0)  # answered with no stack process at all
        alone = len(load.snapshot())

        process = foreground(env)
        deadline = time.monotonic() + 300
        while not state_file.is_file() or json.loads(state_file.read_text())["pid"] != process.pid:
            assert process.poll() is None, "gameserve up exited early"
            assert time.monotonic() < deadline, "the stack did not come up"
            time.sleep(0.5)
        print(f"\ngameserve up SIGKILLed: back in {time.monotonic() - killed:.1f} s")

        # The restarted controller carries the same rollout on, at the step it was in and
        # with its window: it reattached to the serving that outlived it.
        registry = connect_to_stack(Settings(data_dir=data_dir))
        while "resumed" not in [e["event"] for e in registry.rollout_timeline(before.run_id)]:
            assert process.poll() is None, "gameserve up exited early"
            assert time.monotonic() < deadline, "the rollout was not resumed"
            time.sleep(0.5)
        time.sleep(1.0)
    after = _rollout_state(data_dir)
    assert after is not None
    assert (after.run_id, after.challenger, after.phase, after.step, after.step_started) == (
        before.run_id, before.challenger, Phase.STEP, 1, before.step_started,
    )  # fmt: skip
    timeline = registry.rollout_timeline(after.run_id)
    started = [e["index"] for e in timeline if e["event"] == "step_started"]
    assert started == [0, 1], timeline  # no earlier step again, and the step kept its window
    assert [e["event"] for e in timeline].count("resumed") == 1
    runs = [r for r in registry.recent_rollouts(NPC) if r["challenger"] == after.challenger]
    assert [(r["run_id"], r["decision"]) for r in runs] == [(after.run_id, "running")]
    sent, failed = len(load.snapshot()), load.failures
    print(f"rollout of v{after.challenger} resumed at step 1 in run {after.run_id}; "
          f"{sent} calls across the SIGKILL and the restart ({alone} before it), "
          f"{len(failed)} failed")  # fmt: skip
    assert sent > alone > 0
    assert failed == [], failed[:5]
    assert requests.get(f"{state['api_url']}/v2/health/ready", timeout=10).status_code == 200

    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=180)[0].decode()
    assert process.returncode == 0, output
    assert output.count("existing") == len(FAMILIES), output  # nothing retrained
    assert "trained now" not in output
    assert "gameserve stopped." in output
    assert not state_file.exists()
    assert not any(port_in_use("127.0.0.1", port) for port in _ports(stack_env))
