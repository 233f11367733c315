"""``gameserve build-config``: the Serve config Ray accepts and the RayService KubeRay takes."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from models import FAMILIES
from models.errors import InvalidInputError
from pipelines.cli import main
from pipelines.deploy_config import (
    TRACKING_ENV,
    KubeRaySettings,
    NodeGroup,
    cluster_serve_config,
    ingress_disruption_budget,
    parse_versions,
    ray_env,
    rayservice,
)
from pipelines.settings import Settings
from serving.app.autoscaling import Capacity
from serving.app.plan import plan_application
from serving.settings import MARKET_LABEL, FamilyServing, ServingSettings

CRD_SCHEMA = (
    Path(__file__).parents[2] / "deploy" / "schemas" / "kuberay-v1.7.0-rayservice-v1.schema.json"
)
VERSIONS = {"npc-behavior": "3", "difficulty-tuning": "2", "personalization": None}


def test_the_serve_config_is_one_ray_accepts_and_holds_the_plan() -> None:
    settings = Settings()
    serve = cluster_serve_config(settings, VERSIONS, KubeRaySettings())
    ServeDeploySchema.model_validate(serve)  # what `serve deploy` and KubeRay check
    [app] = serve["applications"]
    planned = plan_application(settings.serving, VERSIONS)
    assert [d["name"] for d in app["deployments"]] == [d.name for d in planned.deployments()]
    ingress = next(d for d in app["deployments"] if d["name"] == "ingress")
    assert ingress["user_config"]["champions"]["npc-behavior"] == "3"
    source = app["args"]["source"]["arguments"]
    # Every path is the pod's, and the MLflow address is read where replicas run.
    assert source["signing_key"] == "/etc/gameserve/signing.key"
    assert source["credentials_file"] == "/etc/gameserve/mlflow-credentials.json"
    assert source["tracking_uri_env"] == TRACKING_ENV
    assert app["args"]["serving"]["auth"] == {
        **app["args"]["serving"]["auth"], "mode": "on", "keys_file": "/etc/gameserve/keys.json",
    }  # fmt: skip


def test_the_rayservice_has_a_cpu_head_autoscaled_gpu_workers_and_the_same_config() -> None:
    groups = [
        NodeGroup(name="od", market="on_demand", min_workers=1, max_workers=2, grace_s=90),
        NodeGroup(name="spot", market="spot", max_workers=6, grace_s=30,
                  node_selector={"cloud.google.com/gke-spot": "true"}),
    ]  # fmt: skip
    kuberay = KubeRaySettings(image="registry.example/gameserve:1", gpu_groups=groups)
    assert kuberay.capacity() == Capacity(cpus=4 + 4 * 8, gpus=8)
    serve = cluster_serve_config(Settings(), VERSIONS, kuberay)
    manifest = rayservice(serve, kuberay, ray_env(Settings(), kuberay))
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    embedded = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert embedded == serve
    ServeDeploySchema.model_validate(embedded)
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    head_pod = cluster["headGroupSpec"]["template"]
    head = head_pod["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    assert cluster["headGroupSpec"]["labels"] == {MARKET_LABEL: "on_demand"}
    assert head_pod["metadata"]["labels"] == {"gameserve.io/role": "ingress"}
    on_demand, spot = cluster["workerGroupSpecs"]
    assert (on_demand["minReplicas"], on_demand["maxReplicas"]) == (1, 2)
    assert (spot["minReplicas"], spot["maxReplicas"]) == (0, 6)
    assert on_demand["labels"] == {MARKET_LABEL: "on_demand"}
    assert spot["labels"] == {MARKET_LABEL: "spot"}
    assert spot["template"]["spec"]["nodeSelector"] == {"cloud.google.com/gke-spot": "true"}
    assert spot["template"]["spec"]["terminationGracePeriodSeconds"] == 30
    pre_stop = spot["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]
    assert "ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION" in pre_stop["command"][-1]
    assert "--deadline-remaining-seconds 30" in pre_stop["command"][-1]
    worker = on_demand["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker["image"] == head["image"] == "registry.example/gameserve:1"
    for container in (head, worker):
        env = {e["name"]: e for e in container["env"]}
        assert env[TRACKING_ENV]["valueFrom"]["configMapKeyRef"]["key"] == "tracking_uri"
        assert env["RAY_SERVE_ENABLE_HA_PROXY"]["value"] == "1"
        assert container["volumeMounts"][0] == {
            "name": "gameserve-secrets", "mountPath": "/etc/gameserve", "readOnly": True,
        }  # fmt: skip
    budget = ingress_disruption_budget(kuberay)
    assert budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": {
        "gameserve.io/role": "ingress"}}}  # fmt: skip


def test_the_rayservice_validates_against_kuberays_crd_schema() -> None:
    schema = json.loads(CRD_SCHEMA.read_text())
    kuberay = KubeRaySettings()
    serve = cluster_serve_config(Settings(), VERSIONS, kuberay)
    manifest = rayservice(serve, kuberay, ray_env(Settings(), kuberay))
    jsonschema.validate(manifest, schema)
    # The check has teeth: a field KubeRay does not know is refused.
    broken = yaml.safe_load(yaml.safe_dump(manifest))
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "four"
    with pytest.raises(jsonschema.ValidationError, match="'four' is not of type 'integer'"):
        jsonschema.validate(broken, schema)


def test_npc_never_runs_on_spot_and_personalization_may() -> None:
    families = {name: FamilyServing(num_gpus=0.25) for name in ("npc-behavior", "personalization")}
    plan = plan_application(ServingSettings(families=families), dict.fromkeys(families, "1"))
    options = {d.name: d.code_options["ray_actor_options"] for d in plan.families}
    assert options["npc-behavior"]["label_selector"] == {MARKET_LABEL: "!spot"}
    assert options["npc-behavior-challenger"]["label_selector"] == {MARKET_LABEL: "!spot"}
    assert "label_selector" not in options["personalization"]


def test_versions_come_from_flags_without_a_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GAMESERVE_DATA_DIR", str(tmp_path))  # no stack, no tracking server here
    monkeypatch.delenv("GAMESERVE_TRACKING__URI", raising=False)
    flags = [f"--version={name}=7" for name in sorted(FAMILIES)]
    assert main(["build-config", "--out", str(tmp_path / "deploy"), *flags]) == 0
    serve = yaml.safe_load((tmp_path / "deploy" / "serve-config.yaml").read_text())
    manifest = yaml.safe_load((tmp_path / "deploy" / "rayservice.yaml").read_text())
    assert yaml.safe_load(manifest["spec"]["serveConfigV2"]) == serve
    ingress = serve["applications"][0]["deployments"][-1]
    assert set(ingress["user_config"]["champions"].values()) == {"7"}
    assert main(["build-config", "--kuberay", *flags]) == 0
    printed = list(yaml.safe_load_all(capsys.readouterr().out.split("\n", 1)[1]))
    assert [doc["kind"] for doc in printed] == ["RayService", "PodDisruptionBudget"]
    assert (tmp_path / "deploy" / "pdb.yaml").is_file()


def test_a_malformed_version_flag_names_itself() -> None:
    with pytest.raises(InvalidInputError, match="--version: 'npc-behavior'"):
        parse_versions(["npc-behavior"], sorted(FAMILIES))


def test_the_manifests_in_deploy_are_what_build_config_renders() -> None:
    folder = Path(__file__).parents[2] / "deploy" / "kuberay"
    kuberay = KubeRaySettings()
    serve = cluster_serve_config(Settings(), dict.fromkeys(sorted(FAMILIES), "1"), kuberay)
    assert yaml.safe_load((folder / "serve-config.yaml").read_text()) == serve, (
        "deploy/kuberay is stale: gameserve build-config --out deploy/kuberay "
        "--version npc-behavior=1 --version difficulty-tuning=1 --version personalization=1"
    )
    rendered = rayservice(serve, kuberay, ray_env(Settings(), kuberay))
    assert yaml.safe_load((folder / "rayservice.yaml").read_text()) == rendered
    budget = ingress_disruption_budget(kuberay)
    assert yaml.safe_load((folder / "pdb.yaml").read_text()) == budget


def test_rays_nodes_are_told_the_replica_http_port_wherever_the_config_is_rendered() -> None:
    """The cluster's HAProxy re-points its servers only if the nodes' environment says so,
    whether or not the wrapper is installed on the machine that renders it."""
    settings = Settings.model_validate({"serving": {"runtime": {"replica_http_port": 8012}}})
    env = ray_env(settings, KubeRaySettings(haproxy_wrapper="/opt/gs/bin/gameserve-haproxy"))
    assert env["GAMESERVE_HAPROXY_REPLICA_PORT"] == "8012"
    assert env["GAMESERVE_HAPROXY_REPLICA_BACKEND"] == "http-gameserve"
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == "/opt/gs/bin/gameserve-haproxy"
    # On by default behind HAProxy; None keeps Serve's own replica servers.
    assert ray_env(Settings(), KubeRaySettings())["GAMESERVE_HAPROXY_REPLICA_PORT"] == "8002"
    off = Settings.model_validate({"serving": {"runtime": {"replica_http_port": None}}})
    assert "GAMESERVE_HAPROXY_REPLICA_PORT" not in ray_env(off, KubeRaySettings())


def test_null_in_the_environment_turns_off_what_none_turns_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GAMESERVE_SERVING__RUNTIME__REPLICA_HTTP_PORT", "null")
    monkeypatch.setenv("GAMESERVE_SERVING__GRPC__PORT", "null")
    settings = Settings()
    assert settings.serving.runtime.replica_http_port is None
    assert settings.serving.grpc.port is None
    assert "GAMESERVE_HAPROXY_REPLICA_PORT" not in ray_env(settings, KubeRaySettings())


def test_the_cluster_launcher_yaml_validates_against_rays_schema_and_labels_markets() -> None:
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((Path(__file__).parents[2] / "ray-cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    markets = {
        name: spec.get("labels", {}).get(MARKET_LABEL)
        for name, spec in config["available_node_types"].items()
        if spec["resources"].get("GPU")
    }
    assert markets == {"gpu-worker": "on_demand", "gpu-spot": "spot"}
    spot = config["available_node_types"]["gpu-spot"]["node_config"]
    assert spot["InstanceMarketOptions"]["MarketType"] == "spot"
