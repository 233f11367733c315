"""The front door in-process: keys and scopes, rate, body size, load, CORS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from serving.dataplane.backend import LocalBackend
from serving.dataplane.plane import DataPlane
from serving.http.app import create_app
from serving.http.guard import Guard
from serving.protocol.access import Access, RateLimiter
from serving.protocol.keys import KeyStore
from serving.settings import AuthSettings, LimitSettings, ServingSettings
from tests.asgi.conftest import MAX_ROWS, calm_admission
from tests.payloads import npc_tick

INFER = "/v1/npc/act"
V2_INFER = "/v2/models/npc-behavior/infer"


def _v2_body() -> dict[str, object]:
    return {"inputs": [{"name": "observation", "shape": [1, 40], "datatype": "FP32",
                        "data": [0.1] * 40}]}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.json", reload_interval_s=0)


@pytest.fixture
def guarded(backends: dict[str, LocalBackend], store: KeyStore) -> Iterator[TestClient]:
    settings = ServingSettings(
        auth=AuthSettings(keys_file=store.path, reload_interval_s=1e-6),
        ingress_replicas=1,
        limits=LimitSettings(max_body_bytes=64 * 1024),
    )
    plane = DataPlane(backends, max_rows_per_request=MAX_ROWS, admission=calm_admission())
    app = create_app(plane, settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_health_is_open_and_everything_else_needs_a_key(guarded: TestClient) -> None:
    assert guarded.get("/v2/health/live").status_code == 200
    assert guarded.get("/v2/health/ready").status_code == 200
    guarded_routes = [
        ("POST", INFER), ("GET", "/v1/models"), ("GET", "/v2"),
        ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/v1/nothing"),
    ]  # fmt: skip
    for method, path in guarded_routes:
        response = guarded.request(method, path, json=npc_tick(1) if method == "POST" else None)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        error = response.json()["error"]
        message = error if path.startswith("/v2") else error["message"]
        assert message.startswith("authorization: send 'Authorization: Bearer")


def test_a_wrong_key_is_401_and_v2_answers_in_tritons_body(
    guarded: TestClient, store: KeyStore
) -> None:
    key = store.create("game", ["infer"])
    bad = guarded.post(INFER, json=npc_tick(1), headers=_bearer(key + "x"))
    assert (bad.status_code, bad.json()["error"]["code"]) == (401, "unauthorized")
    v2 = guarded.post(V2_INFER, json=_v2_body(), headers=_bearer("gsk_nope_nope"))
    assert v2.status_code == 401
    assert v2.json() == {"error": "authorization: unknown or revoked API key"}
    basic = guarded.post(INFER, json=npc_tick(1), headers={"Authorization": f"Basic {key}"})
    assert basic.status_code == 401


def test_scopes_decide_what_a_key_may_do(guarded: TestClient, store: KeyStore) -> None:
    infer, read = store.create("game", ["infer"]), store.create("dash", ["read"])
    admin = store.create("ops", ["admin"])
    assert guarded.post(INFER, json=npc_tick(2), headers=_bearer(infer)).status_code == 200
    assert guarded.post(V2_INFER, json=_v2_body(), headers=_bearer(infer)).status_code == 200
    forbidden = guarded.get("/v1/models", headers=_bearer(infer))
    assert (forbidden.status_code, forbidden.json()["error"]["code"]) == (403, "forbidden")
    assert "lacks the 'read' scope" in forbidden.json()["error"]["message"]
    assert guarded.get("/v1/models", headers=_bearer(read)).status_code == 200
    denied = guarded.post(INFER, json=npc_tick(1), headers=_bearer(read))
    assert denied.status_code == 403
    assert "'game'" not in denied.text
    assert "'dash' lacks the 'infer' scope" in denied.text
    for path in ("/v1/models", "/openapi.json"):
        assert guarded.get(path, headers=_bearer(admin)).status_code == 200
    assert guarded.post(INFER, json=npc_tick(1), headers=_bearer(admin)).status_code == 200


def test_revoked_and_rotated_keys_stop_working_without_a_restart(
    guarded: TestClient, store: KeyStore
) -> None:
    old = store.create("game", ["infer"])
    assert guarded.post(INFER, json=npc_tick(1), headers=_bearer(old)).status_code == 200
    new = store.rotate("game")
    assert guarded.post(INFER, json=npc_tick(1), headers=_bearer(old)).status_code == 401
    assert guarded.post(INFER, json=npc_tick(1), headers=_bearer(new)).status_code == 200
    store.revoke("game")
    assert guarded.post(INFER, json=npc_tick(1), headers=_bearer(new)).status_code == 401


def test_a_key_over_its_rate_gets_429_with_retry_after(
    guarded: TestClient, store: KeyStore
) -> None:
    key = store.create("bot", ["infer"], rate_per_s=0.5, burst=3)
    other = store.create("game", ["infer"])
    codes = [guarded.post(INFER, json=npc_tick(1), headers=_bearer(key)).status_code
             for _ in range(5)]  # fmt: skip
    assert codes[:3] == [200, 200, 200]
    assert codes[3:] == [429, 429]
    limited = guarded.post(INFER, json=npc_tick(1), headers=_bearer(key))
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    # One client's budget is its own: another key is not slowed.
    assert guarded.post(INFER, json=npc_tick(1), headers=_bearer(other)).status_code == 200


def test_a_body_over_the_limit_is_413_before_it_is_read(
    guarded: TestClient, store: KeyStore
) -> None:
    key = store.create("game", ["infer"])
    huge = json.dumps(npc_tick(1500)).encode()  # ~100 kB, over the 64 kB limit
    declared = guarded.post(INFER, content=huge, headers=_bearer(key))
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "payload_too_large"
    assert declared.json()["error"]["message"].startswith("body: ")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(huge), 8192):
            yield huge[start : start + 8192]

    streamed = guarded.post(INFER, content=chunks(), headers=_bearer(key))
    assert streamed.status_code == 413, streamed.text
    v2 = guarded.post(V2_INFER, content=chunks(), headers=_bearer(key))
    assert v2.status_code == 413
    assert isinstance(v2.json()["error"], str)
    garbage = guarded.post(INFER, content=b"{}", headers={**_bearer(key), "Content-Length": "x"})
    assert garbage.status_code in (400, 422)


def test_cors_is_off_unless_configured(guarded: TestClient, store: KeyStore) -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    response = guarded.options(INFER, headers=preflight)
    assert "access-control-allow-origin" not in response.headers


ADMIN_ROUTE = "/v1/admin/rollouts"


def test_a_busy_replica_sheds_at_once_instead_of_queueing() -> None:
    """Non-inference routes; inference is bounded by class (tests/asgi/test_game_time.py)."""
    release = asyncio.Event()
    entered = [asyncio.Event() for _ in range(3)]
    started = 0

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal started
        entered[started].set()
        started += 1
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = Guard(slow_app, access=Access(None, RateLimiter(None, 1)),
                  max_body_bytes=1024, max_in_flight=2, retry_after_s=2)  # fmt: skip

    async def call(path: str) -> tuple[int, dict[str, str]]:
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "headers": []}
        await guard(scope, receive, send)  # type: ignore[arg-type]
        start = sent[0]
        headers = {k.decode(): v.decode() for k, v in start["headers"]}  # type: ignore[attr-defined]
        return int(start["status"]), headers  # type: ignore[call-overload]

    async def scenario() -> list[tuple[int, dict[str, str]]]:
        busy = [asyncio.create_task(call(ADMIN_ROUTE)) for _ in range(2)]
        await entered[1].wait()
        shed = await call(ADMIN_ROUTE)
        probe = asyncio.create_task(call("/v2/health/live"))  # probes are never shed
        await entered[2].wait()
        release.set()
        return [shed, *await asyncio.gather(*busy), await probe]

    shed, first, second, probe = asyncio.run(scenario())
    assert shed[0] == 503
    assert shed[1]["retry-after"] == "2"
    assert (first[0], second[0], probe[0]) == (200, 200, 200)
    assert guard.in_flight == 0
