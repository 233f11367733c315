"""Per-key token buckets: a client over its budget gets 429 with ``Retry-After``.

Each ingress replica keeps its own buckets; HAProxy spreads a client's
requests round-robin over the replicas, so each replica enforces its share
(``rate / replicas``, the replicas live now: the ingress updates ``share`` as
the collector hears them) and the whole ingress the key's rate, within a burst.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.errors import RateLimitedError


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
