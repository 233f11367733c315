"""Replicas follow the queue, and a full queue answers 503 at once: on a real Ray."""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from ray import serve

from models import trainable_family
from serving.app.autoscaling import aggressive
from serving.app.builder import SourceSpec
from serving.app.config import INGRESS_NAME
from serving.app.gateway import ServeGateway
from serving.dataplane.model_source import DirectoryModelSource
from serving.settings import FamilyServing, ServingSettings
from tests import bad_models
from tests.auth import TestKeys, bearer
from tests.e2e.load import Load, Outcome
from tests.grpc_calls import GrpcCalls
from tests.payloads import npc_tick, npc_v2_request
from tests.ray.conftest import FAST

NPC = "npc-behavior"


def _replicas(app: str, deployment: str) -> int:
    status = serve.status().applications[app].deployments[deployment]
    return sum(n for state, n in status.replica_states.items() if str(state).endswith("RUNNING"))


def _big_tick(session: requests.Session, url: str, player: str, _: random.Random) -> Outcome:
    """A full 256-NPC tick, sent pre-encoded: the ingress works far longer on it than
    the client does, so requests pile up in the ingress, not in the test's threads."""
    response = session.post(
        f"{url}/v1/npc/act", data=_BIG_TICK, headers={"Content-Type": "application/json"},
        timeout=30,
    )  # fmt: skip
    ok = response.status_code == 200
    return Outcome(player, response.status_code, None, ok, "" if ok else response.text[:300])


_BIG_TICK = json.dumps(npc_tick(256)).encode()


def test_on_default_settings_sustained_queueing_adds_an_ingress_replica(
    gateway: ServeGateway, test_keys: TestKeys
) -> None:
    """The session app runs the default ingress policy: two replicas at least, one per
    CPU Ray sees at most (four here). Load that keeps more requests in the ingress than
    two replicas' target adds one. (Calm takes it away after the 30 s cooldown, during
    the tests after this one; benchmarks/spike.py shows the way down.)"""
    app = gateway.settings.app_name
    policy = gateway.settings.ingress_autoscaling
    assert policy is not None
    assert policy == ServingSettings().ingress_autoscaling  # nothing overridden
    assert _replicas(app, INGRESS_NAME) == 2
    seen = 2
    load = Load(gateway.url, workers=32, max_s=90, headers=test_keys.headers, call=_big_tick)
    with load:
        deadline = time.monotonic() + 60
        while seen < 3 and time.monotonic() < deadline:
            seen = max(seen, _replicas(app, INGRESS_NAME))
            time.sleep(0.5)
        time.sleep(2.0)  # the new replica takes traffic before the load stops
    print(f"\ningress replicas: 2 -> {seen} under {len(load.snapshot())} 256-NPC ticks")
    assert seen >= 3, "sustained queueing never added an ingress replica"
    assert load.failures == []


@pytest.fixture(scope="module")
def slow_version(model_source: DirectoryModelSource) -> str:
    policy = trainable_family(NPC).train(FAST).module
    model_source.add(NPC, "slow", bad_models.export(bad_models.Slow(policy)))
    return "slow"


@pytest.fixture(scope="module", autouse=True)
def _session_app_after(gateway: ServeGateway) -> Iterator[None]:
    """The session app as it was, once, for the modules after this one: each variant
    deploys over the last (a restore between them cost ~16 s each)."""
    yield
    gateway.deploy(gateway.versions)


@contextlib.contextmanager
def _variant(
    gateway: ServeGateway, ray_cluster: str, npc: FamilyServing, version: str
) -> Iterator[ServeGateway]:
    """The session app redeployed with other NPC serving settings."""
    families = {**gateway.settings.families, NPC: npc}
    settings = gateway.settings.model_copy(update={"families": families})
    variant = ServeGateway(
        settings, SourceSpec.model_validate(gateway.source.model_dump()), ray_cluster
    )
    variant.deploy({**gateway.versions, NPC: version})
    yield variant


@pytest.fixture
def elastic(
    gateway: ServeGateway, ray_cluster: str, test_keys: TestKeys
) -> Iterator[tuple[ServeGateway, GrpcCalls]]:
    # One request in flight per replica is the target, so modest load needs three.
    policy = aggressive(
        min_replicas=1,
        max_replicas=3,
        latency_budget_ms=2.0,
        service_time_ms=2.0,
        scale_down_cooldown_s=2.0,
    )
    # The variant's deploy replaces every ingress replica (their settings change): gRPC
    # calls run across it, as a game server's would across a redeploy.
    assert gateway.grpc_address is not None
    with contextlib.ExitStack() as stack:
        with GrpcCalls(gateway.grpc_address, test_keys.admin) as calls:
            time.sleep(1.0)
            variant = stack.enter_context(
                _variant(gateway, ray_cluster, FamilyServing(autoscaling=policy), "1")
            )
            time.sleep(1.0)
        yield variant, calls


def test_queued_load_adds_replicas_and_idleness_removes_them(
    elastic: tuple[ServeGateway, GrpcCalls], test_keys: TestKeys
) -> None:
    served, calls = elastic
    # Across the deploy that made this variant, every ingress replica was replaced.
    print(f"\n{calls.answered} gRPC calls across an ingress redeploy, {len(calls.failures)} failed")
    assert calls.answered > 100
    assert calls.failures == []
    app = served.settings.app_name
    deadline = time.monotonic() + 60  # the gRPC calls may have scaled NPC up already
    while _replicas(app, NPC) > 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _replicas(app, NPC) == 1
    seen = 1
    with Load(served.url, workers=16, players=200, max_s=90, headers=test_keys.headers) as load:
        deadline = time.monotonic() + 60
        while seen < 3 and time.monotonic() < deadline:
            seen = max(seen, _replicas(app, NPC))
            time.sleep(0.5)
        time.sleep(2.0)  # the new replicas serve a while before the load stops
    assert seen >= 2, "the queue never raised the replica count"
    assert load.failures == []  # nothing lost while replicas were added

    deadline = time.monotonic() + 90
    while _replicas(app, NPC) > 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _replicas(app, NPC) == 1


@pytest.fixture
def tiny_queue(
    gateway: ServeGateway, ray_cluster: str, slow_version: str
) -> Iterator[ServeGateway]:
    npc = FamilyServing(
        placement="deployment", max_ongoing_requests=1, max_queued_requests=2, max_batch_rows=8
    )
    with _variant(gateway, ray_cluster, npc, slow_version) as variant:
        yield variant


def test_a_full_queue_answers_the_fallback_on_the_game_api_and_503_on_v2(
    tiny_queue: ServeGateway, api: requests.Session
) -> None:
    """A full queue is overload: the game API answers the NPC fallback, marked;
    v2 (on_miss: error) answers 503 with Retry-After, at once."""

    def game(i: int) -> requests.Response:
        body: dict[str, Any] = {"npcs": [{"npc_id": f"n{i}", "health": 1, "ammo": 1, "threat": 0}]}
        return api.post(f"{tiny_queue.url}/v1/npc/act", json=body, timeout=60)

    def v2(i: int) -> requests.Response:
        url = f"{tiny_queue.url}/v2/models/npc-behavior/infer"
        return api.post(url, json=npc_v2_request(1), timeout=60)

    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(game, range(24)))
        refused = list(pool.map(v2, range(24)))
    assert {r.status_code for r in answers} == {200}
    sources = {(r.json()["source"], r.json()["fallback_reason"]) for r in answers}
    assert sources == {("model", None), ("fallback", "overload")}, sources
    statuses = sorted(r.status_code for r in refused)
    shed = [r for r in refused if r.status_code == 503]
    assert set(statuses) == {200, 503}, statuses
    for response in shed:
        assert response.headers["Retry-After"] == "1"
        assert "npc-behavior" in response.json()["error"]


@pytest.fixture
def slow_deployment(
    gateway: ServeGateway, ray_cluster: str, slow_version: str
) -> Iterator[ServeGateway]:
    # One request per batch: the rest wait in Serve's batch queue, as on a busy replica.
    npc = FamilyServing(placement="deployment", max_batch_rows=1, batch_wait_timeout_s=0.0)
    with _variant(gateway, ray_cluster, npc, slow_version) as variant:
        yield variant


def test_work_that_expires_in_a_family_replicas_batch_queue_never_runs(
    slow_deployment: ServeGateway, api: requests.Session
) -> None:
    """Through a Ray handle: the ingress answers the fallback at the deadline and
    cancels the call; what reaches the replica after its deadline is dropped from
    the batch before the model sees it. Either way the model never runs it."""
    url = f"{slow_deployment.url}/v1/npc/act"

    def call(i: int, deadline_ms: str) -> requests.Response:
        body: dict[str, Any] = {"npcs": [{"npc_id": f"n{i}", "health": 1, "ammo": 1, "threat": 0}]}
        return api.post(url, json=body, headers={"X-Deadline-Ms": deadline_ms}, timeout=60)

    warm = slow_deployment.replica_stats(NPC)
    for i in range(4):  # patient: every ingress replica's handle finds the replica
        assert call(i, "5000").json()["source"] == "model"
    before = slow_deployment.replica_stats(NPC)
    assert before["requests"] - warm["requests"] == 4  # the counter counts model runs

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda i: call(i, "15"), range(8)))
    # The fallback at the deadline, or use_local where the 15 ms were spent before a
    # replica read the request (queued at the edge on a busy machine): never the model.
    outcomes = [
        r.json()["fallback_reason"] if r.status_code == 200 else r.json()["error"]["code"]
        for r in answers
    ]
    assert set(outcomes) <= {"deadline", "use_local", None}, outcomes
    assert len(outcomes) - outcomes.count(None) >= 6, (
        outcomes
    )  # the slow version takes far over 15 ms
    time.sleep(3)  # the replica works through whatever reached its queue
    after = slow_deployment.replica_stats(NPC)
    ran, expired = after["requests"] - before["requests"], after["expired"] - before["expired"]
    cancelled = 8 - ran - expired
    print(f"\n8 requests with a 15 ms deadline: {ran} ran, {expired} dropped unrun from the "
          f"batch queue, {cancelled} cancelled before the replica took them")  # fmt: skip
    assert ran <= 2, (ran, expired)


def test_a_family_scaled_to_zero_answers_by_fallback_until_its_first_replica_is_ready(
    gateway: ServeGateway, ray_cluster: str, test_keys: TestKeys
) -> None:
    """A rarely used family holds no replica; its first callers get the fallback at their
    deadline (never an error, never a wait), and the demand they make brings one back."""
    policy = aggressive(min_replicas=0, max_replicas=1, scale_down_cooldown_s=1.0)
    npc = FamilyServing(autoscaling=policy, deadline_ms=50.0)
    body = {"npcs": [npc_tick(1)["npcs"][0]]}
    with _variant(gateway, ray_cluster, npc, "1") as served:
        app = served.settings.app_name
        with requests.Session() as session:  # every ingress replica has called it once
            for _ in range(20):
                session.post(f"{served.url}/v1/npc/act", json=body, headers=test_keys.headers)
        deadline = time.monotonic() + 60  # deployed with one; calm takes it away
        while _replicas(app, NPC) > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _replicas(app, NPC) == 0
        sources: list[str] = []
        started = time.monotonic()
        # The family's own 50 ms deadline, not the tests' patient one: with 5 s to
        # spare, a request may rightly wait out the whole cold start.
        game_server = bearer(test_keys.admin)
        with requests.Session() as session:
            while time.monotonic() - started < 90 and "model" not in sources[-1:]:
                answer = session.post(
                    f"{served.url}/v1/npc/act", json=body, headers=game_server, timeout=10
                )
                assert answer.status_code == 200, answer.text
                sources.append(answer.json()["source"])
                time.sleep(0.05)
        cold_s = time.monotonic() - started
    print(f"\nscaled to zero: {sources.count('fallback')} fallbacks, first model answer after "
          f"{cold_s:.1f} s")  # fmt: skip
    assert sources[0] == "fallback"
    assert sources[-1] == "model", sources[-5:]
    assert set(sources) == {"fallback", "model"}
