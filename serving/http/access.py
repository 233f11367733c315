"""Who may call what: an API key's scope and its rate, for every protocol.

HTTP (``serving/http/guard.py``) and gRPC (``serving/rpc/service.py``) both
check a caller here, against the same key file and the same buckets, so a
key's rate is its total over both protocols on a replica.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from models.errors import ForbiddenError
from serving.dataplane.game_time import Priority
from serving.http.keys import KeyStore, Scope
from serving.http.rate_limit import RateLimiter
from serving.settings import ServingSettings

_NO_KEYS = Path("/nonexistent/gameserve-keys.json")


@dataclass
class Access:
    keys: KeyStore | None  # None: auth is off (loopback only, see AuthSettings)
    limiter: RateLimiter

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> Access:
        auth = settings.auth
        keys = None
        if auth.mode == "on":
            # No key file means no valid key: every guarded call is refused.
            keys = KeyStore(auth.keys_file or _NO_KEYS, auth.reload_interval_s)
        limiter = RateLimiter(
            auth.default_rate_per_s, auth.default_burst, share=1 / settings.ingress_replicas
        )
        return cls(keys, limiter)

    def check(self, presented: str | None, needed: Scope) -> Priority | None:
        """Raise what a caller presenting ``presented`` gets for a call needing ``needed``;
        else the highest class its key may ask for (``KeyRecord.priority_ceiling``)."""
        if self.keys is None:
            return "critical"  # auth off: loopback development, every caller trusted
        record = self.keys.authenticate(presented)
        if not record.allows(needed):
            raise ForbiddenError(
                f"authorization: key {record.name!r} lacks the {needed!r} scope "
                f"(it has {', '.join(record.scopes)})"
            )
        self.limiter.check(record.name, record.rate_per_s, record.burst, time.monotonic())
        return record.priority_ceiling()


def bearer_token(value: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` value."""
    if value is None:
        return None
    kind, _, token = value.partition(" ")
    return token.strip() if kind.lower() == "bearer" else None
