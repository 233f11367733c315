"""``/metrics`` in-process: exact counts per series after known requests, and its key."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from serving.dataplane.admission import Admission, AdmissionBounds
from serving.dataplane.backend import LocalBackend
from serving.dataplane.plane import DataPlane
from serving.dataplane.telemetry import MetricsSnapshot
from serving.http.app import create_app
from serving.http.metrics import local_snapshot
from tests.asgi.conftest import (
    FALLBACK_DEADLINE_MS,
    MAX_ROWS,
    calm_admission,
    fallback_timing,
    open_client,
    settings_with_keys,
)
from tests.payloads import npc_tick, npc_v2_request, rank_request

NPC = "npc-behavior"


def scrape(client: TestClient) -> list[Sample]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return [s for family in text_string_to_metric_families(response.text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert found, f"no {name} with {labels}"
    return sum(found)


def test_each_request_is_counted_by_version_role_and_outcome(client: TestClient) -> None:
    # A patient deadline: the family's default is a tick, and on a busy machine one
    # request was answered by the fallback (CI, once), which this test does not judge.
    patient = {"X-Deadline-Ms": "5000"}
    for _ in range(3):
        act = client.post("/v1/npc/act", json=npc_tick(16), headers=patient)
        assert act.status_code == 200
    v2 = client.post("/v2/models/npc-behavior/infer", json=npc_v2_request(4), headers=patient)
    assert v2.status_code == 200
    bad = client.post("/v1/npc/act", json={"npcs": [{"npc_id": "x", "health": "full"}]})
    assert bad.status_code == 422

    samples = scrape(client)
    ok = {"family": NPC, "version": "1", "role": "champion", "code": "ok"}
    assert value(samples, "gameserve_requests_total", **ok) == 4
    failed = {"family": NPC, "version": "", "role": "none", "code": "invalid_input"}
    assert value(samples, "gameserve_requests_total", **failed) == 1
    champion = {"family": NPC, "version": "1", "role": "champion"}
    assert value(samples, "gameserve_request_duration_seconds_count", **champion) == 4
    # 1 ms resolution: a bucket at every millisecond up to a tick.
    buckets = [s for s in samples if s.name == "gameserve_request_duration_seconds_bucket"]
    bounds = {s.labels["le"] for s in buckets}
    assert {"0.001", "0.002", "0.019", "0.02", "+Inf"} <= bounds
    assert value(samples, "gameserve_request_rows_sum", **champion) == 3 * 16 + 4
    assert value(samples, "gameserve_request_rows_bucket", le="16", **champion) == 4
    assert value(samples, "gameserve_replicas", deployment=NPC) == 1
    assert value(samples, "gameserve_queue_depth", family=NPC) == 0


def test_shed_and_fallbacks_are_counted(
    backends: dict[str, LocalBackend], key_file: Path, api_keys: dict[str, str]
) -> None:
    # Nothing may be in flight for best-effort work: every rank request is shed.
    shedding = Admission(AdmissionBounds(best_effort_share=0.0, normal_lag_ms=1e6))
    plane = DataPlane(backends, MAX_ROWS, admission=shedding, timing=fallback_timing)
    with open_client(plane, key_file, api_keys["ops"]) as client:
        shed = client.post("/v1/personalization/rank", json=rank_request(8, k=3))
        assert shed.status_code == 503
        patient = {"X-Deadline-Ms": str(FALLBACK_DEADLINE_MS)}  # admitted, no time for the model
        answered = client.post("/v1/npc/act", json=npc_tick(2), headers=patient)
        assert answered.json()["source"] == "fallback"
        samples = scrape(client)
    rank = {"family": "personalization"}
    assert value(samples, "gameserve_shed_total", priority="best_effort", **rank) == 1
    assert value(samples, "gameserve_requests_total", code="overloaded", **rank) == 1
    assert value(samples, "gameserve_fallbacks_total", family=NPC, reason="deadline") == 1
    fallback = {"family": NPC, "version": "", "role": "fallback", "code": "ok"}
    assert value(samples, "gameserve_requests_total", **fallback) == 1
    assert value(samples, "gameserve_expired_total", family=NPC) == 1


@pytest.mark.parametrize(("key", "status"), [(None, 401), ("infer", 403), ("read", 200)])
def test_metrics_take_a_read_key(
    backends: dict[str, LocalBackend],
    key_file: Path,
    api_keys: dict[str, str],
    key: str | None,
    status: int,
) -> None:
    plane = DataPlane(backends, max_rows_per_request=MAX_ROWS, admission=calm_admission())
    with open_client(plane, key_file, api_keys[key] if key else "none") as client:
        assert client.get("/metrics").status_code == status


DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "gameserve.json"


def test_every_dashboard_query_names_a_metric_the_app_exports(
    backends: dict[str, LocalBackend], key_file: Path, api_keys: dict[str, str]
) -> None:
    plane = DataPlane(backends, max_rows_per_request=MAX_ROWS, admission=calm_admission())
    own = local_snapshot(plane)

    async def with_forecast() -> MetricsSnapshot:  # the collector adds it on a cluster
        return dataclasses.replace(
            await own(),
            forecasts={"ingress": (840.0, 3, "seasonal-naive"), "npc-behavior": (90.0, 4, "x")},
            exhausted={"npc-behavior": (2, 6)},
        )

    app = create_app(plane, settings_with_keys(key_file), metrics=with_forecast)
    headers = {"Authorization": f"Bearer {api_keys['ops']}"}
    with TestClient(app, raise_server_exceptions=False, headers=headers) as client:
        client.post("/v1/npc/act", json=npc_tick(2))
        text = client.get("/metrics").text
    exported = {
        sample_name
        for family in text_string_to_metric_families(text)
        for sample_name in _series_names(family.name, family.type)
    }
    ingress = 'deployment="ingress",method="seasonal-naive"'
    assert f"gameserve_forecast_replicas{{{ingress}}} 3.0" in text
    assert f"gameserve_forecast_requests_per_second{{{ingress}}} 840.0" in text
    assert 'gameserve_forecast_replicas{deployment="npc-behavior",method="x"} 4.0' in text
    assert 'gameserve_capacity_exhausted{deployment="npc-behavior"} 1.0' in text
    assert 'gameserve_capacity_short_replicas{deployment="npc-behavior"} 4.0' in text
    assert 'gameserve_capacity_exhausted{deployment="difficulty-tuning"} 0.0' in text
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    named = {name for query in queries for name in re.findall(r"\bgameserve_\w+", query)}
    assert named, "the dashboard queries nothing"
    assert named <= exported, f"not exported: {sorted(named - exported)}"
    # Every metric the app exports has a panel.
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in named}
    assert families >= {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in exported}


def _series_names(name: str, kind: str) -> list[str]:
    """The sample names Prometheus stores for a metric family of ``kind``."""
    if kind == "counter":
        return [f"{name}_total"]
    if kind == "histogram":
        return [f"{name}_bucket", f"{name}_sum", f"{name}_count"]
    return [name]
