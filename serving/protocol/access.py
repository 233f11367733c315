"""Who may call what: an API key's scope and its rate, for every protocol.

HTTP (``serving/http/guard.py``) and gRPC (``serving/rpc/service.py``) both
check a caller here, against the same key file and the same buckets, so a
key's rate is its total over both protocols on a replica.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from models.errors import ForbiddenError, RateLimitedError
from serving.dataplane.game_time import Priority
from serving.protocol.keys import KeyStore, Scope
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


# Per-key token buckets: a client over its budget gets 429 with Retry-After. Each
# ingress replica keeps its own; HAProxy spreads a client's requests over the
# replicas, so each enforces its share (rate / replicas live now: the ingress updates
# `share` as the collector hears them) and the whole ingress the key's rate.
@dataclass
class TokenBucket:
    rate_per_s: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Spend one token: 0 when allowed, else the seconds until one is due."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s


class RateLimiter:
    """One bucket per key name, sized by the key's own limits or the defaults."""

    def __init__(self, rate_per_s: float | None, burst: int, share: float = 1.0) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.share = share
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, key: str, rate_per_s: float | None, burst: int | None, now: float) -> None:
        """Raise RateLimitedError when ``key`` has no token left at ``now``."""
        rate = rate_per_s or self.rate_per_s
        if rate is None:
            return
        rate *= self.share
        size = max(1.0, (burst or self.burst) * self.share)
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate_per_s != rate or bucket.burst != size:
            bucket = self._buckets[key] = TokenBucket(rate, size, size, now)
        wait_s = bucket.take(now)
        if wait_s > 0:
            raise RateLimitedError(
                f"authorization: key {key!r} is over its {rate / self.share:g} requests/s",
                retry_after_s=wait_s,
            )
