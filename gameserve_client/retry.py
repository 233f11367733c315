"""When to try a call again, and how long to wait first: pure, so both clients share it.

A 429 or 503 is the server asking to come back later: the wait is at least its
``Retry-After``. A connection the server dropped (an ingress replica or
HAProxy reloading) is retried too: game API calls change nothing on the
server, so a second try is safe. The first resend after a drop is at once: a
reused keep-alive connection that a reloading HAProxy closed fails before any
byte of the answer, and a fresh connection is served straight away, where even
the first backoff would outlast an NPC's 20 ms. Nothing is retried past the
caller's deadline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3
    backoff_s: float = 0.05  # the first wait; it doubles each time, with jitter
    max_backoff_s: float = 2.0
    # A Retry-After longer than this is not waited for: the call fails instead.
    max_retry_after_s: float = 10.0

    def delay_s(
        self,
        attempt: int,
        status: int | None,
        retry_after: str | None,
        remaining_s: float | None,
        rng: random.Random,
        dropped: bool = False,
    ) -> float | None:
        """The wait before attempt ``attempt + 1``, or None: do not retry.

        ``status`` None means the connection failed, ``dropped`` that it was open
        and closed under the call (not refused); ``remaining_s`` is what is left
        of the caller's deadline (None: no deadline).
        """
        if attempt >= self.retries:
            return None
        if status is not None and status not in RETRY_STATUSES:
            return None
        if status is None and dropped and attempt == 0:
            return 0.0 if remaining_s is None or remaining_s > 0 else None
        backoff = min(self.backoff_s * 2**attempt, self.max_backoff_s)
        wait = backoff * (0.5 + rng.random() / 2)
        asked = parse_retry_after(retry_after)
        if asked is not None:
            if asked > self.max_retry_after_s:
                return None
            wait = max(wait, asked)
        if remaining_s is not None and wait >= remaining_s:
            return None
        return float(wait)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header; an HTTP date or garbage counts as absent."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
