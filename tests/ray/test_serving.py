"""The application on a real Ray, through a real socket."""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from prometheus_client.samples import Sample
from ray import serve
from ray.util.state import list_actors

from models import FAMILIES, trainable_family
from models.errors import ModelArtifactError
from models.runtime import OnnxModel
from serving.app.gateway import ServeGateway
from serving.app.log_follower import ReplicaErrorFollower
from serving.dataplane.model_source import DirectoryModelSource
from serving.runtime.substrate import ServeRuntime
from tests.auth import TestKeys
from tests.notebooks import run_notebook
from tests.payloads import difficulty_request, npc, npc_tick, npc_v2_request, rank_request
from tests.scrape import scrape, values

NPC = trainable_family("npc-behavior")
DIFFICULTY = "difficulty-tuning"


def test_game_api_answers_through_ray(served: ServeGateway, api: requests.Session) -> None:
    url = served.url
    act = api.post(f"{url}/v1/npc/act", json=npc_tick(16), timeout=10)
    assert act.status_code == 200, act.text
    assert act.json()["model"] == {"name": "npc-behavior", "version": "1"}
    assert len(act.json()["decisions"]) == 16
    recommend = api.post(f"{url}/v1/difficulty/recommend", json=difficulty_request(2), timeout=10)
    assert len(recommend.json()["recommendations"]) == 2
    rank = api.post(f"{url}/v1/personalization/rank", json=rank_request(30), timeout=10)
    assert rank.json()["model"]["version"] == "1"
    models = api.get(f"{url}/v1/models", timeout=10).json()["models"]
    # A family served in the ingress runs in each ingress replica; difficulty has its own.
    ingress = served.settings.ingress_replicas
    replicas = {name: 1 if name == "difficulty-tuning" else ingress for name in FAMILIES}
    assert {(m["name"], m["version"], m["replicas"]) for m in models} == {
        (name, "1", replicas[name]) for name in FAMILIES
    }


def test_errors_keep_their_status_across_ray(served: ServeGateway, api: requests.Session) -> None:
    bad = api.post(f"{served.url}/v1/npc/act", json={"npcs": [npc("a", ammo=-1)]}, timeout=10)
    assert bad.status_code == 422
    assert bad.json()["error"]["message"].startswith("npcs[0].ammo")
    missing = api.get(f"{served.url}/v2/models/dragons", timeout=10)
    assert missing.status_code == 404
    assert missing.json() == {"error": "model 'dragons' is not served here"}  # Triton's body
    too_many = api.post(f"{served.url}/v1/npc/act", json=npc_tick(257), timeout=10)
    assert too_many.status_code == 422
    assert too_many.json()["error"]["message"].startswith("npcs:")


def _haproxy_configs() -> list[str]:
    """The configuration of every HAProxy running on this machine (Linux /proc)."""
    configs = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if args[0].endswith(b"/haproxy") and b"-f" in args:
            configs.append(Path(args[args.index(b"-f") + 1].decode()).read_text())
    return configs


@pytest.mark.skipif(not ServeRuntime().haproxy_ingress, reason="HAProxy is not installed")
def test_every_haproxy_listener_is_on_loopback(served: ServeGateway) -> None:
    configs = _haproxy_configs()
    assert configs, "no HAProxy runs"
    lines = [line.split() for config in configs for line in config.splitlines()]
    binds = [words[1] for words in lines if words[:1] == ["bind"]]
    assert binds, configs
    assert all(bind.startswith("127.0.0.1:") for bind in binds), binds


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_speaks_v2_to_the_stack(
    served: ServeGateway,
    model_source: DirectoryModelSource,
    binary: bool,
    test_keys: TestKeys,
) -> None:
    client = triton.InferenceServerClient(url=served.url.removeprefix("http://"))
    key = test_keys.headers
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("npc-behavior", headers=key)
    assert client.is_model_ready("npc-behavior", model_version="1", headers=key)
    assert not client.is_model_ready("npc-behavior", model_version="9", headers=key)
    metadata = client.get_model_metadata("npc-behavior", headers=key)
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"][0] == {"name": "observation", "datatype": "FP32", "shape": [-1, 40]}

    observation = NPC.example_inputs(rows=7, seed=5)["observation"]
    tensor = triton.InferInput("observation", list(observation.shape), "FP32")
    tensor.set_data_from_numpy(observation, binary_data=binary)
    wanted = [triton.InferRequestedOutput("action_probs", binary_data=binary)]
    result = client.infer("npc-behavior", [tensor], outputs=wanted, request_id="t1", headers=key)
    assert result.get_response()["model_version"] == "1"
    expected = OnnxModel(model_source.fetch("npc-behavior", "1"), NPC.contract, prefer_gpu=False)
    np.testing.assert_allclose(
        result.as_numpy("action_probs"),
        expected.predict({"observation": observation})["action_probs"],
        rtol=1e-6,
        atol=1e-7,
    )
    # With no outputs named, tritonclient asks for every output in binary.
    everything = client.infer("npc-behavior", [tensor], headers=key)
    assert everything.as_numpy("action_probs").shape == (7, 10)
    client.close()


def test_tritonclient_prints_our_errors(served: ServeGateway, test_keys: TestKeys) -> None:
    """Triton's error body: tritonclient raises with our message instead of crashing."""
    client = triton.InferenceServerClient(url=served.url.removeprefix("http://"))
    wrong = triton.InferInput("observation", [2, 39], "FP32")
    wrong.set_data_from_numpy(np.zeros((2, 39), dtype=np.float32), binary_data=True)
    with pytest.raises(triton.InferenceServerException) as refused:
        client.infer("npc-behavior", [wrong], headers=test_keys.headers)
    assert "observation: axis 1 must have size 40" in str(refused.value)
    with pytest.raises(triton.InferenceServerException) as unauthorized:
        client.infer("npc-behavior", [wrong])
    assert "authorization: send 'Authorization: Bearer" in str(unauthorized.value)
    client.close()


def test_tritonclient_grpc_reaches_both_placements(
    served: ServeGateway, model_source: DirectoryModelSource, test_keys: TestKeys
) -> None:
    """OIP v2 over gRPC from the ingress replicas: NPC decisions served in their own
    process, difficulty through its deployment's handle; each channel a new
    connection, which the kernel hands to either replica."""
    assert served.grpc_address is not None
    key = {"authorization": f"Bearer {test_keys.admin}", "x-deadline-ms": "5000"}
    observation = NPC.example_inputs(rows=7, seed=5)["observation"]
    expected = OnnxModel(model_source.fetch("npc-behavior", "1"), NPC.contract, prefer_gpu=False)
    probs = expected.predict({"observation": observation})["action_probs"]
    difficulty = trainable_family("difficulty-tuning").example_inputs(rows=3)
    for _ in range(4):
        with triton_grpc.InferenceServerClient(served.grpc_address) as client:
            assert client.is_server_ready()
            tensor = triton_grpc.InferInput("observation", list(observation.shape), "FP32")
            tensor.set_data_from_numpy(observation)
            result = client.infer("npc-behavior", [tensor], headers=key)
            response = result.get_response()
            assert (response.model_version, response.parameters["source"].string_param) == (
                "1", "model",
            )  # fmt: skip
            np.testing.assert_allclose(result.as_numpy("action_probs"), probs, rtol=1e-6)
            tensors = []
            for name, array in difficulty.items():
                tensors.append(triton_grpc.InferInput(name, list(array.shape), "FP32"))
                tensors[-1].set_data_from_numpy(array.astype(np.float32))
            tuned = client.infer("difficulty-tuning", tensors, headers=key).get_response()
            assert (tuned.model_version, tuned.parameters["source"].string_param) == ("1", "model")
    with triton_grpc.InferenceServerClient(served.grpc_address) as client:
        wrong = triton_grpc.InferInput("observation", [2, 39], "FP32")
        wrong.set_data_from_numpy(np.zeros((2, 39), dtype=np.float32))
        with pytest.raises(triton_grpc.InferenceServerException) as refused:
            client.infer("npc-behavior", [wrong], headers=key)
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "observation: axis 1 must have size 40" in refused.value.message()


def test_haproxy_refuses_huge_bodies_and_drops_slow_clients(
    served: ServeGateway, api: requests.Session
) -> None:
    if not served.settings.runtime.haproxy_ingress:
        pytest.skip("HAProxy is not installed here")
    limit = served.settings.limits.max_body_bytes
    huge = api.post(
        f"{served.url}/v1/npc/act",
        data=b"{" + b" " * (limit + 1) + b"}",
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert huge.status_code == 413  # HAProxy's own answer: the replica never sees it
    host, port = served.settings.host, served.settings.port
    timeout_s = served.settings.runtime.haproxy_timeout_http_request_s
    with socket.create_connection((host, port), timeout=timeout_s + 10) as slow:
        slow.sendall(b"POST /v1/npc/act HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        started = time.monotonic()
        answer = slow.recv(4096)  # HAProxy answers 408 or closes, within its timeout
        waited = time.monotonic() - started
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert waited < timeout_s + 5, waited
    assert api.post(f"{served.url}/v1/npc/act", json=npc_tick(1), timeout=10).status_code == 200


def test_concurrent_requests_to_a_family_deployment_share_model_calls(
    served: ServeGateway,
    api: requests.Session,
) -> None:
    assert not served.settings.family(DIFFICULTY).colocated
    before = served.replica_stats(DIFFICULTY)
    requests_sent = 96

    def call(i: int) -> tuple[int, str]:
        # Critical: a burst of 48 on two cores would otherwise shed this class to
        # its fallback, and batching is what is under test here.
        response = api.post(
            f"{served.url}/v1/difficulty/recommend",
            json=difficulty_request(1),
            headers={"X-Priority": "critical"},
            timeout=30,
        )
        return response.status_code, response.json().get("source", "")

    with ThreadPoolExecutor(max_workers=48) as pool:
        answers = list(pool.map(call, range(requests_sent)))
    after = served.replica_stats(DIFFICULTY)
    assert answers == [(200, "model")] * requests_sent
    served_requests = after["requests"] - before["requests"]
    model_calls = after["model_calls"] - before["model_calls"]
    assert served_requests == requests_sent
    assert model_calls < served_requests, (model_calls, served_requests)


def _ingress_processes(served: ServeGateway) -> set[int]:
    """PIDs of the live ingress replicas: unchanged by a swap that restarts nothing."""
    name = f"ServeReplica:{served.settings.app_name}:ingress"
    actors = list_actors(filters=[("class_name", "=", name), ("state", "=", "ALIVE")])
    return {actor.pid for actor in actors if actor.pid is not None}


def test_version_swap_under_load_loses_no_request(
    served: ServeGateway, test_keys: TestKeys
) -> None:
    stop = threading.Event()
    versions: list[tuple[float, str]] = []  # (when the request was sent, version)
    failures: list[str] = []
    lock = threading.Lock()

    def load(worker: int) -> None:
        session = test_keys.session()
        deadline = time.monotonic() + 60  # bounded even if the test body fails
        for i in range(5_000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            sent = time.monotonic()
            try:
                response = session.post(
                    f"{served.url}/v1/npc/act", json=npc_tick(4, f"w{worker}-{i}"), timeout=10
                )
                ok = response.status_code == 200
                outcome = response.json()["model"]["version"] if ok else response.text
            except requests.RequestException as exc:
                ok, outcome = False, repr(exc)
            with lock:
                if ok:
                    versions.append((sent, outcome))
                else:
                    failures.append(outcome)

    def grpc_load() -> None:
        """The same ticks over OIP v2 gRPC: a swap loses no call there either."""
        assert served.grpc_address is not None
        metadata = {"authorization": f"Bearer {test_keys.admin}", "x-deadline-ms": "5000"}
        tensor = triton_grpc.InferInput("observation", [4, 40], "FP32")
        tensor.set_data_from_numpy(NPC.example_inputs(rows=4)["observation"][:4])
        deadline = time.monotonic() + 60
        with triton_grpc.InferenceServerClient(served.grpc_address) as client:
            for _ in range(5_000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                sent = time.monotonic()
                try:
                    answer = client.infer("npc-behavior", [tensor], headers=metadata)
                    outcome, ok = answer.get_response().model_version, True
                except triton_grpc.InferenceServerException as exc:
                    outcome, ok = f"gRPC: {exc}", False
                with lock:
                    if ok:
                        versions.append((sent, outcome))
                    else:
                        failures.append(outcome)

    workers = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    workers.append(threading.Thread(target=grpc_load))
    for worker in workers:
        worker.start()
    try:
        time.sleep(1.0)
        before_swap = _ingress_processes(served)
        served.set_version("npc-behavior", "2")
        swapped = time.monotonic()
        after_swap = served.replica_stats("npc-behavior")
        time.sleep(1.5)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    assert failures == []
    # In place: the same processes (here the ingress replicas, where NPC decisions
    # are served), still counting, now on version 2.
    assert served.settings.family("npc-behavior").colocated
    assert _ingress_processes(served) == before_swap
    assert after_swap["pid"] in before_swap
    assert after_swap["version"] == "2"
    assert after_swap["requests"] > 0
    assert len(versions) > 50
    assert versions[0][1] == "1"
    assert {version for _, version in versions} == {"1", "2"}
    # Serve reconfigures the ingress replicas one after another, so while the swap
    # runs a caller may meet either version; once it has returned, every replica
    # answers with the new one.
    assert {version for sent, version in versions if sent > swapped} == {"2"}


def test_broken_version_is_kept_out_and_nan_never_reaches_a_client(
    served: ServeGateway,
    api: requests.Session,
    serve_logs: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(ModelArtifactError, match="does-not-exist"):
        served.set_version("npc-behavior", "does-not-exist")
    assert served.versions["npc-behavior"] == "1"
    kept = api.post(f"{served.url}/v1/npc/act", json=npc_tick(2), timeout=10)
    assert kept.status_code == 200
    assert kept.json()["model"]["version"] == "1"

    served.set_version("npc-behavior", "nan")
    follower = ReplicaErrorFollower(serve_logs, poll_s=0.2)  # what `gameserve up` runs
    caplog.set_level(logging.ERROR, "gameserve.replicas")
    follower.start()
    try:
        # The game API answers with the NPC fallback, marked; v2 (on_miss: error) a 500.
        response = api.post(f"{served.url}/v1/npc/act", json=npc_tick(2), timeout=10)
        assert response.status_code == 200
        assert response.json()["fallback_reason"] == "invalid_output"
        assert "NaN" not in response.text
        v2 = api.post(
            f"{served.url}/v2/models/npc-behavior/infer", json=npc_v2_request(2), timeout=10
        )
        assert v2.status_code == 500
        assert "not finite" in v2.json()["error"]
        # The failure is in the replica's log with its traceback, and on the stack's
        # console, though players saw the fallback.
        deadline = time.monotonic() + 15
        while not any("invalid_output" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the failure never reached the console"
            time.sleep(0.2)
    finally:
        follower.stop()
    reported = next(r.getMessage() for r in caplog.records if "invalid_output" in r.getMessage())
    assert reported.startswith("replica_gameserve_"), reported
    assert "Traceback (most recent call last)" in reported


def test_serving_processes_never_load_torch(served: ServeGateway, api: requests.Session) -> None:
    # torch is for training and export; a replica that imported it would carry
    # its libraries (hundreds of MB) for nothing. Read from each live process.
    api.post(f"{served.url}/v1/npc/act", json=npc_tick(4), timeout=10).raise_for_status()
    replicas = [
        actor
        for actor in list_actors(filters=[("state", "=", "ALIVE")])
        if actor.class_name.startswith(f"ServeReplica:{served.settings.app_name}:")
    ]
    assert replicas
    for actor in replicas:
        maps = Path(f"/proc/{actor.pid}/maps").read_text()
        assert "libtorch" not in maps, actor.class_name
        rss_kb = next(
            int(line.split()[1])
            for line in Path(f"/proc/{actor.pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
        print(f"\n{actor.class_name}: RSS {rss_kb / 1024:.0f} MB, no torch")


def test_metrics_sum_every_ingress_replica_under_load(
    served: ServeGateway, api: requests.Session, test_keys: TestKeys
) -> None:
    url = served.url
    time.sleep(1.0)  # what earlier tests sent has reached the collector
    before = scrape(url, test_keys.headers)
    sent = 60
    with ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(
                lambda _: api.post(f"{url}/v1/npc/act", json=npc_tick(4), timeout=10), range(sent)
            )
        )
    assert {a.status_code for a in answers} == {200}
    time.sleep(1.0)  # every replica's counts reach the collector
    after = scrape(url, test_keys.headers)
    ok = {"family": NPC.name, "version": "1", "code": "ok"}

    def answered(samples: list[Sample]) -> float:
        model = sum(s.value for s in values(samples, "gameserve_requests_total", **ok))
        fallback = values(samples, "gameserve_requests_total", family=NPC.name, role="fallback")
        return model + sum(s.value for s in fallback)

    assert answered(after) - answered(before) == sent
    # Both autoscale by default: the gauges say what Serve runs now.
    deployments = serve.status().applications[served.settings.app_name].deployments
    for name in ("ingress", DIFFICULTY):
        running = sum(
            n for state, n in deployments[name].replica_states.items()
            if str(state).endswith("RUNNING")
        )  # fmt: skip
        assert values(after, "gameserve_replicas", deployment=name)[0].value == running
    rows = values(after, "gameserve_request_rows_count", family=NPC.name, version="1")
    assert sum(s.value for s in rows) >= sent


def test_the_call_the_stack_notebook_runs_against_it(
    served: ServeGateway, test_keys: TestKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "GAMESERVE_API_URL": served.url,
        "GAMESERVE_API_KEY": test_keys.admin,
        "GAMESERVE_DATA_DIR": str(tmp_path),
    }
    result = run_notebook("call_the_stack.ipynb", env, tmp_path, monkeypatch)
    # Each situation's top action, by the same model over both protocols.
    assert "'wounded, under fire': '" in result
    assert "'calm patrol': '" in result
