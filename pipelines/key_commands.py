"""``gameserve keys ...``, and the admin key a local stack makes on its first start.

The key file is the store of record (``serving/protocol/keys.py``); running replicas
re-read it within ``serving.auth.reload_interval_s``, so nothing restarts.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipelines.private_files import write_private
from pipelines.report import table
from pipelines.settings import Settings
from serving.dataplane.game_time import Priority
from serving.protocol.keys import KeyStore, Scope, parse_scopes

ADMIN_KEY_NAME = "admin"


def key_file(settings: Settings) -> Path:
    return (settings.serving.auth.keys_file or settings.data_dir / "keys.json").resolve()


def admin_key_path(settings: Settings) -> Path:
    """Where a local stack keeps its first admin key, owner-only."""
    return settings.data_dir.resolve() / "admin.key"


def ensure_admin_key(settings: Settings) -> Path | None:
    """On a stack's first start, create an admin key and keep it for its owner.

    Returns the file the key was written to, or None when keys already exist.
    """
    store = KeyStore(key_file(settings))
    if store.list():
        return None
    key = store.create(ADMIN_KEY_NAME, ["admin"])
    path = admin_key_path(settings)
    write_private(path, key + "\n")
    return path


def stored_admin_key(settings: Settings) -> str | None:
    """The local stack's admin key, for the CLI's own calls to the API."""
    path = admin_key_path(settings)
    return path.read_text().strip() if path.is_file() else None


def create(
    settings: Settings,
    name: str,
    scopes: str,
    expires_in_days: float | None,
    rate_per_s: float | None,
    burst: int | None,
    max_priority: Priority | None = None,
) -> str:
    parsed: list[Scope] = parse_scopes(scopes)
    expires_in_s = None if expires_in_days is None else expires_in_days * 86_400
    key = KeyStore(key_file(settings)).create(
        name, parsed, expires_in_s=expires_in_s, rate_per_s=rate_per_s, burst=burst,
        max_priority=max_priority,
    )  # fmt: skip
    # The key alone on the last line, so a script can take it with `tail -n 1`.
    return f"created {name!r} with scopes {','.join(parsed)}; it is shown only now:\n{key}"


def rotate(settings: Settings, name: str) -> str:
    key = KeyStore(key_file(settings)).rotate(name)
    return f"rotated {name!r}; the old key no longer works; the new one is shown only now:\n{key}"


def revoke(settings: Settings, name: str) -> str:
    KeyStore(key_file(settings)).revoke(name)
    return f"revoked {name!r}; replicas refuse it within seconds"


def listing(settings: Settings) -> str:
    now = time.time()
    rows = [
        (
            record.name,
            ",".join(record.scopes),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created_at)),
            "never"
            if record.expires_at is None
            else (
                "EXPIRED"
                if record.expired(now)
                else time.strftime("%Y-%m-%d %H:%M", time.localtime(record.expires_at))
            ),
            "default" if record.rate_per_s is None else f"{record.rate_per_s:g}/s",
            record.priority_ceiling() or "family's",
        )
        for record in KeyStore(key_file(settings)).list()
    ]
    return table(("name", "scopes", "created", "expires", "rate", "max priority"), rows)
