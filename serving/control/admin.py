"""The admin API: rollout commands, champion moves and API keys, ``admin`` scope only.

It is served by the process that owns the registry (the stack), not by the
ingress: replicas never hold credentials that can move what players see. This
module knows HTTP and the key store; what a rollout command *does* is behind
``RolloutControls``, which the pipeline implements over MLflow.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field

from models.contract import RequestModel
from models.errors import ModelNotFoundError
from serving.dataplane.game_time import Priority
from serving.http.errors import install_error_handlers
from serving.http.guard import ADMIN_PREFIX, Guard
from serving.protocol.access import Access, RateLimiter
from serving.protocol.keys import KeyRecord, KeyStore, Scope

Command = Literal["pause", "resume", "abort", "promote"]


class RolloutControls(Protocol):
    """What the admin API asks of the rollout pipeline; each returns a sentence."""

    def families(self) -> list[str]: ...

    def start(self, family: str, version: str) -> str: ...

    def command(self, family: str, action: Command) -> str: ...

    def rollback(self, family: str) -> str: ...

    def set_champion(self, family: str, version: str) -> str: ...

    def status(self, family: str) -> dict[str, Any]: ...


class VersionBody(RequestModel):
    version: str = Field(min_length=1, max_length=32, pattern=r"^[0-9]+$")


class NewKey(RequestModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    scopes: list[Scope] = Field(min_length=1)
    expires_in_days: float | None = Field(default=None, gt=0)
    rate_per_s: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)
    max_priority: Priority | None = Field(
        default=None, description="The highest class X-Priority may ask for; None: the family's."
    )


class Done(BaseModel):
    message: str


class IssuedKey(BaseModel):
    """The only response that ever carries a key."""

    name: str
    key: str
    message: str


class KeyInfo(BaseModel):
    name: str
    scopes: list[Scope]
    created_at: float
    expires_at: float | None
    rate_per_s: float | None
    burst: int | None
    max_priority: Priority | None = None

    @classmethod
    def of(cls, record: KeyRecord) -> KeyInfo:
        return cls(**record.model_dump(exclude={"key_id", "salt", "digest"}))


def admin_router(controls: RolloutControls, keys: KeyStore | None) -> APIRouter:
    router = APIRouter(prefix=ADMIN_PREFIX, tags=["admin"])

    def known(family: str) -> str:
        if family not in controls.families():
            raise ModelNotFoundError(
                f"family: unknown model family {family!r}; known: {', '.join(controls.families())}"
            )
        return family

    @router.get("/families/{family}")
    def family_status(family: str) -> dict[str, Any]:
        return controls.status(known(family))

    @router.post("/families/{family}/rollout", status_code=202)
    def start_rollout(family: str, body: VersionBody) -> Done:
        return Done(message=controls.start(known(family), body.version))

    @router.post("/families/{family}/rollout/{action}", status_code=202)
    def steer_rollout(family: str, action: Command) -> Done:
        return Done(message=controls.command(known(family), action))

    @router.post("/families/{family}/rollback")
    def rollback(family: str) -> Done:
        return Done(message=controls.rollback(known(family)))

    @router.put("/families/{family}/champion")
    def set_champion(family: str, body: VersionBody) -> Done:
        return Done(message=controls.set_champion(known(family), body.version))

    if keys is None:
        return router

    @router.get("/keys")
    def list_keys() -> list[KeyInfo]:
        return [KeyInfo.of(record) for record in keys.list()]

    @router.post("/keys", status_code=201)
    def create_key(body: NewKey) -> IssuedKey:
        lifetime = None if body.expires_in_days is None else body.expires_in_days * 86_400
        key = keys.create(
            body.name,
            body.scopes,
            expires_in_s=lifetime,
            rate_per_s=body.rate_per_s,
            burst=body.burst,
            max_priority=body.max_priority,
        )
        return IssuedKey(name=body.name, key=key, message="shown only now; store it")

    @router.post("/keys/{name}/rotate")
    def rotate_key(name: str) -> IssuedKey:
        key = keys.rotate(name)
        return IssuedKey(name=name, key=key, message="the old key no longer works")

    @router.delete("/keys/{name}")
    def revoke_key(name: str) -> Done:
        keys.revoke(name)
        return Done(message=f"revoked {name!r}; replicas refuse it within seconds")

    return router


def create_admin_app(
    controls: RolloutControls,
    keys: KeyStore | None,
    *,
    max_body_bytes: int = 64 * 1024,
    max_in_flight: int = 32,
) -> FastAPI:
    """The admin API behind the same guard as the inference API.

    ``keys`` None is auth off (loopback-only development): every route opens.
    """
    app = FastAPI(
        title="gameserve admin",
        description="Rollouts, champions and API keys. Every route takes "
        "'Authorization: Bearer <key with the admin scope>'.",
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(admin_router(controls, keys))
    install_error_handlers(app)
    app.add_middleware(
        Guard,
        access=Access(keys, RateLimiter(None, 1)),
        max_body_bytes=max_body_bytes,
        max_in_flight=max_in_flight,
    )
    return app
