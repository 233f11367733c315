"""Canary rollouts on a real Ray and a real MLflow server, with load throughout."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from mlflow import MlflowClient

from models import FAMILIES
from models.build import build
from models.export import check_parity
from models.runtime import OnnxModel
from models.training import TrainSettings
from pipelines.registry import CHALLENGER, CHAMPION, PREVIOUS, ModelRegistry, connect
from pipelines.registry_source import registry_source_spec
from pipelines.rollout import commands
from pipelines.rollout.controller import OUTCOME_TAG, RolloutController
from pipelines.rollout.settings import (
    FamilyRollout,
    Preflight,
    RolloutSettings,
    RolloutStep,
    Thresholds,
)
from pipelines.settings import TrackingSettings
from pipelines.tracking_server import EmbeddedTrackingServer
from pipelines.training import register_build, register_onnx, train_and_register
from serving.gateway import ServeGateway
from serving.settings import ServingSettings
from tests import bad_models as rollout_models
from tests.auth import TestKeys
from tests.e2e.load import Load

NPC = FAMILIES["npc-behavior"]
GOOD = TrainSettings(train_samples=20_000, eval_samples=2_000, epochs=5)
STEPS = [
    RolloutStep(name="shadow", weight=0.0, shadow=1.0, bake_s=2.0),
    RolloutStep(name="10%", weight=0.1, bake_s=2.0),
    RolloutStep(name="50%", weight=0.5, bake_s=2.0),
    RolloutStep(name="100%", weight=1.0, bake_s=2.0),
]
LIMITS = Thresholds(
    min_requests=20,
    min_latency_samples=80,
    max_p99_ratio=2.0,
    p99_slack_ms=10.0,
    max_divergence=0.2,
)


def _settings(preflight: bool) -> RolloutSettings:
    plan = FamilyRollout(
        steps=STEPS,
        thresholds=LIMITS,
        preflight=Preflight(enabled=preflight, quality_tolerance=0.03, eval_samples=2_000),
    )
    return RolloutSettings(poll_interval_s=0.5, decision_interval_s=0.25, families={NPC.name: plan})


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTrackingServer]:
    with EmbeddedTrackingServer(tmp_path_factory.mktemp("rollout-mlflow")) as server:
        yield server


@pytest.fixture(scope="module")
def registry(
    tracking: EmbeddedTrackingServer, tmp_path_factory: pytest.TempPathFactory
) -> ModelRegistry:
    client_settings = TrackingSettings(request_max_retries=0, request_timeout_s=10)
    return connect(tracking.url, client_settings, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def champion(registry: ModelRegistry) -> object:
    """Version 1 of the NPC model, promoted; its torch network seeds the bad challengers."""
    result = build(NPC, GOOD.model_copy(update={"seed": 1}))
    registered = register_build(result, registry)
    registry.promote(NPC.name, registered.version)
    return result.trained.module


@pytest.fixture(scope="module")
def gateway(
    ray_cluster: str,
    serve_port: int,
    registry: ModelRegistry,
    champion: object,
    tmp_path_factory: pytest.TempPathFactory,
    test_keys: TestKeys,
) -> Iterator[ServeGateway]:
    tracking = TrackingSettings(request_max_retries=1, request_timeout_s=10)
    source = registry_source_spec(
        registry.tracking_uri, tracking, tmp_path_factory.mktemp("replica-cache")
    )
    serving = ServeGateway(
        ServingSettings(port=serve_port, auth=test_keys.auth), source, ray_cluster
    )
    serving.deploy({NPC.name: registry.aliases(NPC.name)[CHAMPION]})
    try:
        yield serving
    finally:
        serving.stop()


def _register_bad(registry: ModelRegistry, module: object, seed: int) -> str:
    onnx_model = rollout_models.export(module)  # type: ignore[arg-type]
    parity = check_parity(module, onnx_model, NPC.contract, [NPC.example_inputs(64, 3)])  # type: ignore[arg-type]
    return register_onnx(
        NPC,
        onnx_model,
        registry,
        metrics={"parity_max_abs_diff": parity.max_abs_diff},
        params={"kind": type(module).__name__},
        seed=seed,
    ).version


def _rollout(
    registry: ModelRegistry, gateway: ServeGateway, version: str, preflight: bool = False
) -> tuple[object, Load]:
    controller = RolloutController(registry, gateway, _settings(preflight))
    champion_before = registry.aliases(NPC.name)[CHAMPION]
    commands.start(registry, NPC.name, version)
    with Load(gateway.url) as load:
        time.sleep(0.5)
        result = controller.run_rollout(NPC.name, champion_before, version)
        time.sleep(0.5)
    assert load.snapshot(), "the load generator sent nothing"
    return result, load


def test_good_challenger_is_promoted_with_no_failed_request(
    registry: ModelRegistry, gateway: ServeGateway
) -> None:
    old = registry.aliases(NPC.name)[CHAMPION]
    new = train_and_register(NPC, GOOD.model_copy(update={"seed": 2}), registry).version
    result, load = _rollout(registry, gateway, new, preflight=True)
    assert result.decision == "promoted", result.reason  # type: ignore[attr-defined]
    assert load.failures == []
    assert {o.version for o in load.snapshot()} == {old, new}
    aliases = registry.aliases(NPC.name)
    assert (aliases[CHAMPION], aliases[PREVIOUS]) == (new, old)
    assert CHALLENGER not in aliases
    assert gateway.versions[NPC.name] == new
    assert gateway.challengers == {}

    client = MlflowClient(registry.tracking_uri)
    run = client.get_run(result.run_id)  # type: ignore[attr-defined]
    assert run.data.tags["gameserve.decision"] == "promoted"
    history = client.get_metric_history(result.run_id, "challenger_p99_ms")  # type: ignore[attr-defined]
    assert sorted(m.step for m in history) == list(range(len(STEPS)))
    assert "preflight_challenger_teacher_agreement" in run.data.metrics


def test_nan_challenger_is_rolled_back_at_its_first_traffic_and_no_client_sees_nan(
    registry: ModelRegistry, gateway: ServeGateway, champion: object
) -> None:
    before = registry.aliases(NPC.name)[CHAMPION]
    bad = _register_bad(registry, rollout_models.NanForWoundedNpcs(champion), seed=11)  # type: ignore[arg-type]
    result, load = _rollout(registry, gateway, bad)
    assert result.decision == "rolled_back"  # type: ignore[attr-defined]
    assert result.reason.startswith("shadow: invalid outputs")  # type: ignore[attr-defined]
    assert load.failures == []
    assert bad not in {o.version for o in load.snapshot()}
    assert registry.aliases(NPC.name)[CHAMPION] == before
    assert CHALLENGER not in registry.aliases(NPC.name)
    assert "invalid" in registry.client.get_model_version(NPC.name, bad).tags[OUTCOME_TAG]
    assert gateway.challengers == {}


def test_five_times_slower_challenger_is_rolled_back_on_latency(
    registry: ModelRegistry, gateway: ServeGateway, champion: object
) -> None:
    slow = rollout_models.Slow(champion)  # type: ignore[arg-type]
    version = _register_bad(registry, slow, seed=12)
    fast_path = registry.resolve(NPC.name).path
    slow_path = registry.resolve_version(NPC.name, version).path
    batch = NPC.example_inputs(rows=4)
    seconds = {}
    for name, path in (("champion", fast_path), ("slow", slow_path)):
        model = OnnxModel(path, NPC.contract, prefer_gpu=False)
        model.predict(batch)
        started = time.perf_counter()
        for _ in range(5):
            model.predict(batch)
        seconds[name] = time.perf_counter() - started
    assert seconds["slow"] > 5 * seconds["champion"], seconds

    result, load = _rollout(registry, gateway, version)
    assert result.decision == "rolled_back"  # type: ignore[attr-defined]
    assert "latency" in result.reason  # type: ignore[attr-defined]
    assert load.failures == []


def test_diverging_challenger_is_stopped_in_shadow(
    registry: ModelRegistry, gateway: ServeGateway
) -> None:
    version = _register_bad(registry, rollout_models.AlwaysAttack(), seed=13)
    result, load = _rollout(registry, gateway, version)
    assert result.decision == "rolled_back"  # type: ignore[attr-defined]
    assert result.reason.startswith("shadow: behaviour diverges")  # type: ignore[attr-defined]
    assert load.failures == []
    assert version not in {o.version for o in load.snapshot()}


def test_preflight_refuses_a_worse_challenger_before_any_traffic(
    registry: ModelRegistry, gateway: ServeGateway
) -> None:
    version = _register_bad(registry, rollout_models.AlwaysAttack(), seed=14)
    result, load = _rollout(registry, gateway, version, preflight=True)
    assert result.decision == "rolled_back"  # type: ignore[attr-defined]
    assert result.reason.startswith("pre-flight: quality")  # type: ignore[attr-defined]
    assert version not in {o.version for o in load.snapshot()}


def test_a_player_stays_on_one_version_throughout_a_step(
    registry: ModelRegistry, gateway: ServeGateway
) -> None:
    champion_version = registry.aliases(NPC.name)[CHAMPION]
    candidate = train_and_register(NPC, GOOD.model_copy(update={"seed": 3}), registry).version
    gateway.start_challenger(NPC.name, candidate)
    try:
        gateway.set_traffic(NPC.name, weight=0.5, shadow=0.0, salt="sticky-test")
        with Load(gateway.url, players=40, max_requests=1_500) as load:
            time.sleep(6)
    finally:
        gateway.stop_challenger(NPC.name, promote=False)
    by_player: dict[str, set[str | None]] = {}
    for outcome in load.snapshot():
        by_player.setdefault(outcome.player, set()).add(outcome.version)
    assert load.failures == []
    assert all(len(versions) == 1 for versions in by_player.values()), by_player
    on_challenger = sum(versions == {candidate} for versions in by_player.values())
    assert 0 < on_challenger < len(by_player)
    assert {v for vs in by_player.values() for v in vs} == {champion_version, candidate}


def test_operator_abort_and_rollback_to_previous(
    registry: ModelRegistry, gateway: ServeGateway
) -> None:
    import threading

    candidate = train_and_register(NPC, GOOD.model_copy(update={"seed": 4}), registry).version
    settings = _settings(preflight=False)
    settings.families[NPC.name].steps = [RolloutStep(name="5%", weight=0.05, bake_s=600)]
    controller = RolloutController(registry, gateway, settings)
    champion_version = registry.aliases(NPC.name)[CHAMPION]
    commands.start(registry, NPC.name, candidate)
    results: list[object] = []
    worker = threading.Thread(
        target=lambda: results.append(controller.run_rollout(NPC.name, champion_version, candidate))
    )
    with Load(gateway.url):
        worker.start()
        deadline = time.monotonic() + 60
        while NPC.name not in gateway.challengers and time.monotonic() < deadline:
            time.sleep(0.2)
        commands.command(registry, NPC.name, "pause")
        while "5% (paused)" not in commands.status(registry, NPC.name):
            assert time.monotonic() < deadline, commands.status(registry, NPC.name)
            time.sleep(0.2)
        commands.command(registry, NPC.name, "abort")
        worker.join(timeout=60)
    assert results
    assert results[0].decision == "rolled_back"  # type: ignore[attr-defined]
    assert "aborted by an operator" in results[0].reason  # type: ignore[attr-defined]

    assert registry.aliases(NPC.name)[CHAMPION] == champion_version

    # By hand in MLflow (a notebook, say): serving follows the champion alias both ways.
    registry.promote(NPC.name, candidate)
    controller.run_once()
    assert gateway.versions[NPC.name] == candidate
    commands.rollback(registry, NPC.name)
    controller.run_once()
    assert gateway.versions[NPC.name] == champion_version
    assert registry.aliases(NPC.name)[CHAMPION] == champion_version
