"""The admin API over a real socket, driving a real registry: scopes, commands, keys, CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import requests

from models import trainable_family
from pipelines import cli
from pipelines.registry import CHALLENGER, CHAMPION, PREVIOUS, ModelRegistry
from pipelines.rollout.commands import RegistryControls
from pipelines.rollout.controller import RolloutController
from pipelines.rollout.settings import FamilyRollout, Preflight, RolloutSettings
from pipelines.rollout.state import RolloutStore
from pipelines.training import train_and_register
from serving.control.admin import create_admin_app
from serving.control.admin_server import AdminServer
from serving.protocol.keys import KeyStore
from tests.auth import TestKeys, bearer
from tests.mlflow.conftest import FAST
from tests.unit.rollout_fakes import FakeGateway

NPC = "npc-behavior"


@pytest.fixture
def keys(tmp_path: Path) -> TestKeys:
    return TestKeys.create(tmp_path / "keys.json")


@pytest.fixture
def controller(registry: ModelRegistry, tmp_path: Path) -> RolloutController:
    """The stack's controller over a real registry, never started: the test runs its passes.

    Serving is the in-memory gateway of the controller's unit tests: what is
    checked here is that a command crosses the API into the controller's state.
    """
    settings = RolloutSettings(families={NPC: FamilyRollout(preflight=Preflight(enabled=False))})
    store = RolloutStore(tmp_path / "rollouts")
    return RolloutController(registry, FakeGateway(NPC, "1"), settings, store)


@pytest.fixture
def admin(registry: ModelRegistry, keys: TestKeys, controller: RolloutController) -> Iterator[str]:
    app = create_admin_app(RegistryControls(registry, controller), KeyStore(keys.path, 0.1))
    with AdminServer(app, "127.0.0.1", 0) as server:
        yield server.url + "/v1/admin"


@pytest.fixture
def versions(registry: ModelRegistry) -> tuple[str, str]:
    first = train_and_register(trainable_family(NPC), FAST, registry).version
    registry.promote(NPC, first)
    second = train_and_register(
        trainable_family(NPC), FAST.model_copy(update={"seed": 5}), registry
    )
    return first, second.version


def test_every_admin_route_needs_an_admin_key(admin: str, keys: TestKeys) -> None:
    game = KeyStore(keys.path).create("game", ["infer", "read"])
    routes = [
        ("GET", f"/families/{NPC}", None),
        ("POST", f"/families/{NPC}/rollout", {"version": "1"}),
        ("POST", f"/families/{NPC}/rollout/abort", None),
        ("POST", f"/families/{NPC}/rollback", None),
        ("PUT", f"/families/{NPC}/champion", {"version": "1"}),
        ("GET", "/keys", None),
        ("POST", "/keys", {"name": "x", "scopes": ["admin"]}),
        ("DELETE", "/keys/tests-admin", None),
    ]
    for method, path, body in routes:
        anonymous = requests.request(method, admin + path, json=body, timeout=10)
        assert anonymous.status_code == 401, (path, anonymous.text)
        assert anonymous.headers["WWW-Authenticate"] == "Bearer"
        refused = requests.request(
            method, admin + path, json=body, headers=bearer(game), timeout=10
        )
        assert refused.status_code == 403, (path, refused.text)
        assert "lacks the 'admin' scope" in refused.json()["error"]["message"]
    assert [k.name for k in KeyStore(keys.path).list()] == ["tests-admin", "game"]


def test_rollout_commands_champion_and_rollback_through_the_api(
    admin: str,
    keys: TestKeys,
    registry: ModelRegistry,
    versions: tuple[str, str],
    controller: RolloutController,
) -> None:
    first, second = versions
    session = requests.Session()
    session.headers.update(keys.headers)

    started = session.post(f"{admin}/families/{NPC}/rollout", json={"version": second})
    assert started.status_code == 202, started.text
    assert registry.aliases(NPC)[CHALLENGER] == second
    assert controller.reconciler.advance(NPC)  # the rollout's run, in MLflow
    paused = session.post(f"{admin}/families/{NPC}/rollout/pause")
    assert paused.status_code == 202
    assert controller.reconciler.advance(NPC)  # the next pass applies it, and saves it
    state = controller.store.load(NPC)
    assert state is not None
    assert state.paused
    assert state.challenger == second
    status = session.get(f"{admin}/families/{NPC}").json()
    assert status["aliases"] == {CHAMPION: first, CHALLENGER: second, PREVIOUS: None}

    moved = session.put(f"{admin}/families/{NPC}/champion", json={"version": second})
    assert moved.status_code == 200, moved.text
    assert registry.aliases(NPC)[CHAMPION] == second
    back = session.post(f"{admin}/families/{NPC}/rollback")
    assert back.status_code == 200, back.text
    assert registry.aliases(NPC)[CHAMPION] == first

    # Each refusal names what is wrong.
    for method, path, body, status_code, names in [
        ("PUT", f"/families/{NPC}/champion", {"version": "999"}, 404, "999"),
        ("PUT", f"/families/{NPC}/champion", {"version": 2}, 422, "version"),
        ("PUT", f"/families/{NPC}/champion", {"version": "1", "force": True}, 422, "force"),
        ("POST", "/families/chess/rollout", {"version": "1"}, 404, "chess"),
        ("POST", f"/families/{NPC}/rollout/explode", None, 422, "action"),
    ]:
        answer = session.request(method, admin + path, json=cast(Any, body))
        assert answer.status_code == status_code, (path, answer.text)
        assert names in answer.json()["error"]["message"], answer.text
    assert registry.aliases(NPC)[CHAMPION] == first


def test_keys_are_managed_through_the_api(admin: str, keys: TestKeys) -> None:
    session = requests.Session()
    session.headers.update(keys.headers)
    made = session.post(f"{admin}/keys", json={"name": "ops", "scopes": ["admin"], "burst": 5})
    assert made.status_code == 201, made.text
    ops = made.json()["key"]
    listed = session.get(f"{admin}/keys").json()
    assert {k["name"] for k in listed} == {"tests-admin", "ops"}
    assert not any("digest" in k or "salt" in k for k in listed)  # nothing to attack offline
    assert requests.get(f"{admin}/keys", headers=bearer(ops), timeout=10).ok

    rotated = session.post(f"{admin}/keys/ops/rotate").json()["key"]
    assert requests.get(f"{admin}/keys", headers=bearer(ops), timeout=10).status_code == 401
    assert requests.get(f"{admin}/keys", headers=bearer(rotated), timeout=10).ok
    assert session.delete(f"{admin}/keys/ops").ok
    assert requests.get(f"{admin}/keys", headers=bearer(rotated), timeout=10).status_code == 401
    duplicate = session.post(f"{admin}/keys", json={"name": "tests-admin", "scopes": ["read"]})
    assert duplicate.status_code == 422
    assert "tests-admin" in duplicate.json()["error"]["message"]
    bad_scope = session.post(f"{admin}/keys", json={"name": "y", "scopes": ["root"]})
    assert bad_scope.status_code == 422
    assert "scopes" in bad_scope.json()["error"]["message"]


def test_cli_rollout_commands_go_through_the_admin_api(
    admin: str,
    keys: TestKeys,
    registry: ModelRegistry,
    versions: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, second = versions
    # No MLflow credentials and no signing key in this data dir: the CLI holds
    # nothing but its API key, and the stack does the writing.
    monkeypatch.setenv("GAMESERVE_DATA_DIR", str(tmp_path / "operator"))
    monkeypatch.setenv("GAMESERVE_ADMIN_URL", admin.removesuffix("/v1/admin"))
    monkeypatch.setenv("GAMESERVE_API_KEY", keys.admin)
    assert cli.main(["champion", "set", NPC, second]) == 0
    assert registry.aliases(NPC)[CHAMPION] == second
    assert cli.main(["rollback", NPC]) == 0
    assert registry.aliases(NPC)[CHAMPION] == first
    assert cli.main(["rollout", "status", NPC]) == 0
    printed = capsys.readouterr().out
    assert f"champion is v{second}" in printed
    assert "rollout phase: none" in printed

    monkeypatch.setenv("GAMESERVE_API_KEY", "gsk_nobody_0000")
    assert cli.main(["champion", "set", NPC, second]) == 1
    assert "unauthorized" in capsys.readouterr().err
    assert registry.aliases(NPC)[CHAMPION] == first
