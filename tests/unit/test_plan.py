"""The application plan: one description of the deployments, read by the graph and the config."""

from __future__ import annotations

import json

from serving.app.autoscaling import Capacity, QueueDepthSettings
from serving.app.config import IngressConfig, ReplicaConfig
from serving.app.demand_forecast import ForecastSettings
from serving.app.gateway import adopted_state
from serving.app.plan import plan_application
from serving.dataplane.routing import Route
from serving.settings import FamilyServing, ServingSettings

DIFFICULTY = "difficulty-tuning"


def _settings() -> ServingSettings:
    families = {**ServingSettings().families, DIFFICULTY: FamilyServing(placement="deployment")}
    return ServingSettings(families=families)


def test_colocated_families_are_the_ingress_state_and_the_others_have_two_deployments() -> None:
    plan = plan_application(_settings(), {"npc-behavior": "1", DIFFICULTY: "2"})
    assert [d.name for d in plan.deployments()] == [
        DIFFICULTY,
        f"{DIFFICULTY}-challenger",
        "ingress",
    ]
    ingress = IngressConfig.model_validate(plan.ingress.user_config)
    assert ingress.champions == {"npc-behavior": "1", "personalization": None}
    champion, challenger = plan.families
    assert ReplicaConfig.model_validate(champion.user_config).version == "2"
    assert ReplicaConfig.model_validate(challenger.user_config).version is None
    # Declared but idle between rollouts: adding it later would restart the app.
    assert challenger.options["autoscaling_config"]["min_replicas"] == 0


def test_a_rollout_is_carried_by_the_plan() -> None:
    route = Route(challenger_version="3", weight=0.25, salt="run")
    plan = plan_application(
        _settings(),
        {"npc-behavior": "1", DIFFICULTY: "2"},
        {DIFFICULTY: "3", "npc-behavior": "4"},
        {DIFFICULTY: route},
    )
    ingress = IngressConfig.model_validate(plan.ingress.user_config)
    assert ingress.routes == {DIFFICULTY: route}
    assert ingress.challengers == {"npc-behavior": "4"}  # served in the ingress itself
    _, challenger = plan.families
    assert ReplicaConfig.model_validate(challenger.user_config).version == "3"
    assert challenger.options["autoscaling_config"]["min_replicas"] == 1


def test_a_family_that_forecasts_hands_its_terms_to_its_champion_replicas() -> None:
    forecast = ForecastSettings(bucket_s=3.0, season_s=90.0, requests_per_replica_s=200.0)
    family = FamilyServing(
        num_gpus=1.0, autoscaling=QueueDepthSettings(min_replicas=1, forecast=forecast)
    )
    settings = ServingSettings(families={DIFFICULTY: family}, capacity=Capacity(cpus=8, gpus=4))
    champion, challenger = plan_application(settings, {DIFFICULTY: "2"}).families
    terms = ReplicaConfig.model_validate(champion.user_config).forecast
    assert terms is not None
    assert (terms.settings, terms.min_replicas, terms.max_replicas) == (forecast, 1, 4)
    assert champion.options["autoscaling_config"]["max_replicas"] == 4
    # A challenger runs pinned for its rollout: it has nothing to forecast.
    assert ReplicaConfig.model_validate(challenger.user_config).forecast is None


def test_a_stack_that_reattaches_reads_the_plan_back_from_the_deployed_config() -> None:
    """What ``ServeGateway.adopt`` takes over from the application a dead stack left."""
    versions = {"npc-behavior": "1", DIFFICULTY: "2", "personalization": "5"}
    challengers = {DIFFICULTY: "3", "npc-behavior": "4"}
    routes = {
        DIFFICULTY: Route(challenger_version="3", weight=0.25, salt="run-a", step=2),
        "npc-behavior": Route(challenger_version="4", shadow=1.0, salt="run-b"),
    }
    plan = plan_application(_settings(), versions, challengers, routes)
    # As Serve echoes it back: JSON, the deployments' user_config as given.
    deployed = json.loads(
        json.dumps([{"name": d.name, "user_config": d.user_config} for d in plan.deployments()])
    )
    assert adopted_state(deployed) == (versions, challengers, routes)
