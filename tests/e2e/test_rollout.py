"""Canary rollouts on a real Ray and a real MLflow server, with load throughout."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import time
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from prometheus_client.samples import Sample

from models import trainable_family
from models.export import check_parity
from models.runtime import OnnxModel
from models.training import TrainSettings
from pipelines.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    TAG_SIGNATURE,
    ModelRegistry,
)
from pipelines.rollout.commands import RegistryControls, describe
from pipelines.rollout.preflight import preflight
from pipelines.rollout.reconcile import OUTCOME_TAG
from pipelines.rollout.settings import RolloutStep, Thresholds
from pipelines.tracking_server import EmbeddedTrackingServer
from pipelines.training import register_onnx, train_and_register
from serving.app.gateway import ServeGateway
from tests import bad_models as rollout_models
from tests.attacks import move_champion, register_outside_the_pipeline
from tests.auth import TestKeys
from tests.e2e.load import Load
from tests.e2e.rollouts import GOOD, LIMITS, NPC, STEPS, controlled, rollout_settings
from tests.notebooks import run_notebook
from tests.payloads import npc, npc_tick
from tests.scrape import Scraper, scrape, values

DIFFICULTY = "difficulty-tuning"
QUICK = TrainSettings(train_samples=3_000, eval_samples=500, epochs=2)


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
    registry: ModelRegistry,
    gateway: ServeGateway,
    version: str,
    headers: dict[str, str],
    preflight: bool = False,
    scraper: Scraper | None = None,
    limits: Thresholds = LIMITS,
) -> tuple[object, Load]:
    recorded = gateway.settings.payload_log.dir
    settings = rollout_settings(preflight, limits)
    RegistryControls(registry).start(NPC.name, version)
    with (
        controlled(registry, gateway, settings, recorded) as controller,
        Load(gateway.url, headers=headers) as load,
        scraper or contextlib.nullcontext(),
    ):
        time.sleep(0.5)
        result = controller.run_rollout(NPC.name)
        time.sleep(0.5)
    assert load.snapshot(), "the load generator sent nothing"
    return result, load


def test_good_challenger_is_promoted_with_no_failed_request(
    registry: ModelRegistry,
    gateway: ServeGateway,
    test_keys: TestKeys,
) -> None:
    old = registry.aliases(NPC.name)[CHAMPION]
    new = train_and_register(NPC, GOOD.model_copy(update={"seed": 2}), registry).version
    scraper = Scraper(gateway.url, test_keys.headers)
    # A good challenger's p99 differs from the champion's by noise alone, and a p99 over
    # the 10% step's ~80 samples is near their maximum: on a shared 2-core CI runner it
    # reached twice the champion's once (40.9 ms against 20.4). This test is about
    # promotion without a failed request; the latency gate has its own (five times slower).
    patient = LIMITS.model_copy(update={"p99_slack_ms": 40.0})
    result, load = _rollout(registry, gateway, new, test_keys.headers, True, scraper, patient)
    assert result.decision == "promoted", result.reason  # type: ignore[attr-defined]
    time.sleep(1.0)  # the replicas' last counts reach the collector
    _metrics_followed_the_rollout(scraper, scrape(gateway.url, test_keys.headers), old, new)
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


def _metrics_followed_the_rollout(scraper: Scraper, last: list[Sample], old: str, new: str) -> None:
    """What Prometheus saw, scraping the API every half second under the rollout's load."""
    assert scraper.failures == []
    family = {"family": NPC.name}
    at = {**family, "challenger": new}
    steps = {s.value for s in scraper.seen("gameserve_rollout_step", **at)}
    assert steps == set(range(len(STEPS)))
    weights = {s.value for s in scraper.seen("gameserve_rollout_weight", **at)}
    assert weights == {step.weight for step in STEPS}
    for role in ("champion", "challenger"):
        assert scraper.seen("gameserve_rollout_gate", **at, role=role, gate="p99_ms")
        assert scraper.seen("gameserve_rollout_gate", **at, role=role, gate="error_rate")
    assert scraper.seen("gameserve_rollout_gate", **at, role="challenger", gate="divergence")
    assert not values(last, "gameserve_rollout_step", **family), "the rollout is over"
    for version, role in ((old, "champion"), (new, "challenger"), (new, "champion")):
        series = {**family, "version": version, "role": role}
        answered = values(last, "gameserve_requests_total", **series, code="ok")
        assert answered, f"no {series}: {values(last, 'gameserve_requests_total', **family)}"
        assert answered[0].value > 0
        assert values(last, "gameserve_request_duration_seconds_count", **series)[0].value > 0
        assert values(last, "gameserve_request_rows_sum", **series)[0].value > 0
    assert values(last, "gameserve_replicas", deployment=NPC.name)[0].value >= 1
    assert values(last, "gameserve_replicas", deployment="ingress")[0].value >= 1
    assert scraper.seen("gameserve_queue_depth", **family)
    assert max(s.value for s in scraper.seen("gameserve_queue_depth", **family)) >= 1
    assert values(last, "gameserve_fallbacks_total", **family, reason="deadline")


def test_nan_challenger_is_rolled_back_at_its_first_traffic_and_no_client_sees_nan(
    registry: ModelRegistry,
    gateway: ServeGateway,
    champion: object,
    test_keys: TestKeys,
) -> None:
    before = registry.aliases(NPC.name)[CHAMPION]
    bad = _register_bad(registry, rollout_models.NanForWoundedNpcs(champion), seed=11)  # type: ignore[arg-type]
    result, load = _rollout(registry, gateway, bad, test_keys.headers)
    assert result.decision == "rolled_back"  # type: ignore[attr-defined]
    assert result.reason.startswith("shadow: invalid outputs")  # type: ignore[attr-defined]
    assert load.failures == []
    assert bad not in {o.version for o in load.snapshot()}
    assert registry.aliases(NPC.name)[CHAMPION] == before
    assert CHALLENGER not in registry.aliases(NPC.name)
    assert "invalid" in registry.version_tags(NPC.name, bad)[OUTCOME_TAG]
    assert gateway.challengers == {}


def test_a_challenger_broken_only_on_recorded_traffic_is_stopped_by_the_replay(
    registry: ModelRegistry,
    gateway: ServeGateway,
    champion: object,
    test_keys: TestKeys,
) -> None:
    # Players fight NPCs at point blank, which the family's generator never does.
    melee = {"npcs": [npc(f"melee-{i}", enemies=[{"distance_m": 0.2, "bearing_deg": 0.0}])
                      for i in range(8)]}  # fmt: skip
    for _ in range(10):
        answer = requests.post(
            f"{gateway.url}/v1/npc/act", json=melee, headers=test_keys.headers, timeout=10
        )
        assert answer.status_code == 200, answer.text
    time.sleep(1.5)  # the payload log writes its files twice a second
    before = registry.aliases(NPC.name)[CHAMPION]
    bad = _register_bad(registry, rollout_models.NanAtPointBlank(champion), seed=13)  # type: ignore[arg-type]
    gates = rollout_settings(preflight=True).families[NPC.name].preflight
    synthetic_only = preflight(registry, NPC.name, before, bad, gates)
    assert synthetic_only.passed, synthetic_only.reason

    result, load = _rollout(registry, gateway, bad, test_keys.headers, preflight=True)
    assert result.decision == "rolled_back"  # type: ignore[attr-defined]
    assert result.reason.startswith("pre-flight: replay:"), result.reason  # type: ignore[attr-defined]
    assert bad not in {o.version for o in load.snapshot()}  # it never took traffic
    assert load.failures == []
    metrics = MlflowClient(registry.tracking_uri).get_run(result.run_id).data.metrics  # type: ignore[attr-defined]
    assert metrics["replay_challenger_invalid_rate"] > 0
    assert metrics["replay_champion_invalid_rate"] == 0
    assert registry.aliases(NPC.name)[CHAMPION] == before


def test_five_times_slower_challenger_is_rolled_back_on_latency(
    registry: ModelRegistry,
    gateway: ServeGateway,
    champion: object,
    test_keys: TestKeys,
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

    result, load = _rollout(registry, gateway, version, test_keys.headers)
    assert result.decision == "rolled_back"  # type: ignore[attr-defined]
    assert "latency" in result.reason  # type: ignore[attr-defined]
    assert load.failures == []


def test_diverging_challenger_is_stopped_in_shadow(
    registry: ModelRegistry,
    gateway: ServeGateway,
    test_keys: TestKeys,
) -> None:
    version = _register_bad(registry, rollout_models.AlwaysAttack(), seed=13)
    result, load = _rollout(registry, gateway, version, test_keys.headers)
    assert result.decision == "rolled_back"  # type: ignore[attr-defined]
    assert result.reason.startswith("shadow: behaviour diverges")  # type: ignore[attr-defined]
    assert load.failures == []
    assert version not in {o.version for o in load.snapshot()}


def test_preflight_refuses_a_worse_challenger_before_any_traffic(
    registry: ModelRegistry,
    gateway: ServeGateway,
    test_keys: TestKeys,
) -> None:
    version = _register_bad(registry, rollout_models.AlwaysAttack(), seed=14)
    result, load = _rollout(registry, gateway, version, test_keys.headers, preflight=True)
    assert result.decision == "rolled_back"  # type: ignore[attr-defined]
    assert result.reason.startswith("pre-flight: quality")  # type: ignore[attr-defined]
    assert version not in {o.version for o in load.snapshot()}


def test_a_player_stays_on_one_version_throughout_a_step(
    registry: ModelRegistry,
    gateway: ServeGateway,
    test_keys: TestKeys,
) -> None:
    champion_version = registry.aliases(NPC.name)[CHAMPION]
    candidate = train_and_register(NPC, GOOD.model_copy(update={"seed": 3}), registry).version
    gateway.start_challenger(NPC.name, candidate)
    try:
        gateway.set_traffic(NPC.name, weight=0.5, shadow=0.0, salt="sticky-test")
        with Load(gateway.url, players=40, max_requests=1_500, headers=test_keys.headers) as load:
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


def test_operator_abort_and_rollback_to_previous_while_other_families_move_on(
    registry: ModelRegistry,
    gateway: ServeGateway,
    test_keys: TestKeys,
) -> None:
    candidate = train_and_register(NPC, GOOD.model_copy(update={"seed": 4}), registry).version
    settings = rollout_settings(preflight=False)
    settings.families[NPC.name].steps = [RolloutStep(name="5%", weight=0.05, bake_s=600)]
    champion_version = registry.aliases(NPC.name)[CHAMPION]
    with controlled(registry, gateway, settings) as controller:
        controls = RegistryControls(registry, controller)
        controls.start(NPC.name, candidate)
        controller.start()  # a loop per family, as in the stack
        with Load(gateway.url, headers=test_keys.headers):
            deadline = time.monotonic() + 60
            while NPC.name not in gateway.challengers and time.monotonic() < deadline:
                time.sleep(0.2)
            # The NPC rollout bakes for ten minutes; another family's champion
            # change does not wait for it: its own loop serves it.
            other = trainable_family(DIFFICULTY)
            version = train_and_register(other, QUICK, registry).version
            controls.set_champion(DIFFICULTY, version)
            while gateway.versions.get(DIFFICULTY) != version:
                assert time.monotonic() < deadline + 60, gateway.versions
                time.sleep(0.2)
            assert NPC.name in gateway.challengers  # still mid-rollout
            controls.command(NPC.name, "pause")
            while "5% (paused)" not in describe(controls.status(NPC.name)):
                assert time.monotonic() < deadline + 60, controls.status(NPC.name)
                time.sleep(0.2)
            controls.command(NPC.name, "abort")
            while not controller.history:
                assert time.monotonic() < deadline + 120, controls.status(NPC.name)
                time.sleep(0.2)
        controller.stop()
        (result,) = controller.history
        assert result.decision == "rolled_back"
        assert "aborted by an operator" in result.reason
        assert registry.aliases(NPC.name)[CHAMPION] == champion_version

        # By hand in MLflow (a notebook, say): serving follows the champion alias both ways.
        registry.promote(NPC.name, candidate)
        controller.run_once()
        assert gateway.versions[NPC.name] == candidate
        controls.rollback(NPC.name)
        controller.run_once()
        assert gateway.versions[NPC.name] == champion_version
        assert registry.aliases(NPC.name)[CHAMPION] == champion_version


def _rollout_runs(registry: ModelRegistry, challenger: str) -> int:
    experiment = MlflowClient(registry.tracking_uri).get_experiment_by_name("gameserve-rollouts")
    assert experiment is not None
    runs = MlflowClient(registry.tracking_uri).search_runs(
        [experiment.experiment_id], filter_string=f"tags.`gameserve.challenger` = '{challenger}'"
    )
    return len(runs)


def test_an_unloadable_challenger_is_rejected_once_and_never_retried(
    registry: ModelRegistry, gateway: ServeGateway, tracking: EmbeddedTrackingServer
) -> None:
    """IR 14 passes onnx.checker; ONNX Runtime 1.31 refuses it. Registered by hand
    with a valid signature (a key holder's mistake): pre-flight still stops it."""
    unloadable = rollout_models.beyond_onnx_runtime(NPC.train(GOOD).export())
    version = register_outside_the_pipeline(tracking.url, NPC.name, unloadable)
    signature = registry.signer.sign_version(
        NPC.name, hashlib.sha256(unloadable).hexdigest(), NPC.contract.fingerprint()
    )
    MlflowClient(registry.tracking_uri).set_model_version_tag(
        NPC.name, version, TAG_SIGNATURE, signature
    )
    registry.set_alias(NPC.name, CHALLENGER, version)
    champion_before = gateway.versions[NPC.name]
    with controlled(registry, gateway, rollout_settings(preflight=True)) as controller:
        for _ in range(3):  # the controller's loop, three polls
            controller.run_once()
    assert [r.decision for r in controller.history] == ["rolled_back"]
    assert "ONNX Runtime cannot load it" in controller.history[0].reason
    assert _rollout_runs(registry, version) == 1
    assert CHALLENGER not in registry.aliases(NPC.name)
    assert gateway.versions[NPC.name] == champion_before
    assert gateway.challengers == {}


def test_a_champion_moved_outside_the_pipeline_is_refused_and_logged_once(
    registry: ModelRegistry,
    gateway: ServeGateway,
    tracking: EmbeddedTrackingServer,
    nan_npc_model: bytes,
    caplog: pytest.LogCaptureFixture,
    test_keys: TestKeys,
) -> None:
    serving_before = gateway.versions[NPC.name]
    champion_before = registry.aliases(NPC.name)[CHAMPION]
    forged = register_outside_the_pipeline(tracking.url, NPC.name, nan_npc_model)
    move_champion(tracking.url, NPC.name, forged)
    try:
        with (
            controlled(registry, gateway, rollout_settings(preflight=False)) as controller,
            caplog.at_level(logging.ERROR, logger="pipelines.rollout.controller"),
        ):
            for _ in range(3):
                controller.run_once()
        refusals = [r for r in caplog.records if "champion v" in r.getMessage()]
        assert len(refusals) == 1, [r.getMessage() for r in refusals]
        assert "the pipeline did not put it there" in refusals[0].getMessage()
        assert gateway.versions[NPC.name] == serving_before
        with test_keys.session() as api:
            answer = api.post(f"{gateway.url}/v1/npc/act", json=npc_tick(2), timeout=10)
        assert answer.json()["model"]["version"] == serving_before
    finally:
        move_champion(tracking.url, NPC.name, champion_before)


def test_the_rollout_notebook_plots_the_last_finished_rollout(
    registry: ModelRegistry,
    gateway: ServeGateway,
    champion: object,
    test_keys: TestKeys,
    signing_key: Path,
    credentials_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A rollout of its own that takes traffic (a challenger stopped at its first step,
    # whose window is still recorded), so the test needs nothing another test left behind.
    bad = _register_bad(registry, rollout_models.NanForWoundedNpcs(champion), seed=19)  # type: ignore[arg-type]
    result, _ = _rollout(registry, gateway, bad, test_keys.headers)
    assert result.decision == "rolled_back"  # type: ignore[attr-defined]
    latest = registry.recent_rollouts(NPC.name, 1)[0]
    assert latest["challenger"] == bad
    assert registry.rollout_steps(latest["run_id"]), "a rollout that took traffic has steps"
    # The notebook logs in to MLflow with the stack's credentials from the data dir.
    shutil.copy(signing_key, tmp_path / "signing.key")
    shutil.copy(credentials_file, tmp_path / "mlflow-credentials.json")
    env = {"GAMESERVE_TRACKING__URI": registry.tracking_uri, "GAMESERVE_DATA_DIR": str(tmp_path)}
    result_text = run_notebook("analyze_rollout.ipynb", env, tmp_path, monkeypatch)
    assert f"'run_id': '{latest['run_id']}'" in result_text
    assert "'p99_ms'" in result_text
