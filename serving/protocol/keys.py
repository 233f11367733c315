"""API keys: random, shown once, stored hashed in one owner-only file, reloaded live.

A key reads ``gsk_<id>_<secret>``: the id finds its record, the secret is
checked against a salted SHA-256 digest. A slow password hash (scrypt,
argon2) buys nothing for a 256-bit random secret, which no one can guess at
any hashing speed, and it would hand an attacker a lever on the hot path:
every wrong key would cost tens of milliseconds of an ingress event loop.

The file is the store of record: the CLI writes it (atomically, under a lock),
each ingress replica re-reads it when it changes, checking at most once per
``reload_interval_s`` (and at once for a key id it does not know), so a key
created works at once and one rotated or revoked stops within seconds,
without restarting anything. On Kubernetes the same file can be
a mounted Secret, which the kubelet updates in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from models.errors import GameserveError, InvalidInputError, UnauthorizedError
from serving.dataplane.game_time import Priority

logger = logging.getLogger(__name__)

Scope = Literal["infer", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("infer", "read", "admin")
KEY_PREFIX = "gsk_"


class KeyRecord(BaseModel):
    """What is stored of one key: never the key itself."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    key_id: str
    salt: str
    digest: str
    scopes: list[Scope]
    created_at: float
    expires_at: float | None = None
    rate_per_s: float | None = Field(
        default=None, gt=0, description="Requests per second; None takes the serving default."
    )
    burst: int | None = Field(default=None, ge=1)
    max_priority: Priority | None = Field(
        default=None,
        description="The highest class X-Priority may ask for with this key; None: the "
        "family's own class (an admin key: any). Asking above it is lowered and counted.",
    )

    def priority_ceiling(self) -> Priority | None:
        """The highest class this key may ask for; None: each family's declared class."""
        if self.max_priority is None and "admin" in self.scopes:
            return "critical"
        return self.max_priority

    def allows(self, scope: Scope) -> bool:
        """``admin`` holds every scope."""
        return scope in self.scopes or "admin" in self.scopes

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(_digest(self.salt, secret), self.digest)


class KeyFile(BaseModel):
    keys: list[KeyRecord] = Field(default_factory=list)


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def _split(key: str) -> tuple[str, str] | None:
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, _, secret = key.removeprefix(KEY_PREFIX).partition("_")
    return (key_id, secret) if key_id and secret else None


def parse_scopes(text: str) -> list[Scope]:
    """``"infer,read"`` → ``["infer", "read"]``, or InvalidInputError naming ``scopes``."""
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise InvalidInputError(f"scopes: {unknown or text!r} not among {', '.join(SCOPES)}")
    return [s for s in SCOPES if s in scopes]


class KeyStore:
    """Reads and writes the key file; ``authenticate`` is what every request calls."""

    def __init__(self, path: Path, reload_interval_s: float = 1.0) -> None:
        self.path = path
        self.reload_interval_s = reload_interval_s
        self._by_id: dict[str, KeyRecord] = {}
        self._seen: tuple[int, int, int] | None = None
        self._checked_at = float("-inf")

    # -- the request path ------------------------------------------------------

    def authenticate(self, presented: str | None) -> KeyRecord:
        """The record of a valid, unexpired key, or UnauthorizedError saying why not."""
        if not presented:
            raise UnauthorizedError("authorization: send 'Authorization: Bearer <api key>'")
        self._refresh()
        parts = _split(presented)
        record = self._by_id.get(parts[0]) if parts else None
        if parts is not None and record is None:
            # Perhaps created a moment ago: a key made from the CLI works at once on
            # every replica. A stat is all an unknown id costs; the file is re-read
            # only when it changed.
            self._refresh(force=True)
            record = self._by_id.get(parts[0])
        if parts is None or record is None or not record.matches(parts[1]):
            raise UnauthorizedError("authorization: unknown or revoked API key")
        if record.expired(time.time()):
            raise UnauthorizedError(f"authorization: API key {record.name!r} has expired")
        return record

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < self.reload_interval_s:
            return
        self._checked_at = now
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self._by_id, self._seen = {}, None
            return
        seen = (info.st_ino, info.st_mtime_ns, info.st_size)
        if seen == self._seen:
            return
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            # Anyone who can write this file can make themselves an admin.
            logger.error("%s is writable by others; refusing every key in it", self.path)
            self._by_id, self._seen = {}, seen
            return
        if info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
            # Allowed: it holds names, scopes and salted digests, never a key, and a
            # Kubernetes Secret is mounted 0644 unless its defaultMode says otherwise.
            logger.warning(
                "%s is readable by others: key names and scopes are visible (keys are not); "
                "chmod 600 it, or set the Secret's defaultMode to 0400",
                self.path,
            )
        records = self._read().keys
        self._by_id, self._seen = {r.key_id: r for r in records}, seen
        logger.info("API keys loaded from %s: %d", self.path, len(records))

    # -- management (the CLI and the stack) ---------------------------------------

    def list(self) -> list[KeyRecord]:
        return self._read().keys

    def create(
        self,
        name: str,
        scopes: Iterable[Scope],
        *,
        expires_in_s: float | None = None,
        rate_per_s: float | None = None,
        burst: int | None = None,
        max_priority: Priority | None = None,
    ) -> str:
        """Store a new key and return it: the only time it is ever shown."""
        with self._editing() as current:
            if any(r.name == name for r in current.keys):
                raise InvalidInputError(f"name: a key named {name!r} exists; revoke or rotate it")
            key, record = _new_key(name, list(scopes), expires_in_s)
            record.rate_per_s, record.burst = rate_per_s, burst
            record.max_priority = max_priority
            current.keys.append(record)
        return key

    def rotate(self, name: str) -> str:
        """A new secret for ``name`` (same scopes and limits); the old one stops working."""
        with self._editing() as current:
            old = self._named(current, name)
            lifetime = None if old.expires_at is None else old.expires_at - old.created_at
            key, record = _new_key(name, old.scopes, lifetime)
            record.rate_per_s, record.burst = old.rate_per_s, old.burst
            record.max_priority = old.max_priority
            current.keys[current.keys.index(old)] = record
        return key

    def revoke(self, name: str) -> None:
        with self._editing() as current:
            current.keys.remove(self._named(current, name))

    @staticmethod
    def _named(current: KeyFile, name: str) -> KeyRecord:
        for record in current.keys:
            if record.name == name:
                return record
        raise InvalidInputError(f"name: no key named {name!r}")

    def _read(self) -> KeyFile:
        try:
            return KeyFile.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return KeyFile()
        except ValueError as exc:
            raise GameserveError(f"{self.path}: not a key file: {exc}") from None

    @contextlib.contextmanager
    def _editing(self) -> Iterator[KeyFile]:
        """The current file, rewritten atomically (owner-only) when the block succeeds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            os.chmod(lock_path, 0o600)
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            current = self._read()
            yield current
            fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
            try:
                with os.fdopen(fd, "w") as handle:  # mkstemp creates it 0600
                    handle.write(current.model_dump_json(indent=2))
                os.replace(temp, self.path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        self._checked_at = float("-inf")  # this process sees its own change at once


def _new_key(name: str, scopes: list[Scope], expires_in_s: float | None) -> tuple[str, KeyRecord]:
    if not scopes:
        raise InvalidInputError("scopes: at least one of infer, read, admin")
    key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
    now = time.time()
    record = KeyRecord(
        name=name,
        key_id=key_id,
        salt=salt,
        digest=_digest(salt, secret),
        scopes=scopes,
        created_at=now,
        expires_at=None if expires_in_s is None else now + expires_in_s,
    )
    return f"{KEY_PREFIX}{key_id}_{secret}", record
