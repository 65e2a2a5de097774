"""Per-site request budgets: a token bucket for each site, keyed by its authenticated identity.

A site is who its verified client certificate says it is (the roster entry the service found),
never its address or a header, so one site's flood spends only that site's budget: another
site's requests are admitted from their own buckets whatever the flood does. A request over
budget is refused with :class:`~.errors.RateLimited` (HTTP 429, ``Retry-After``) before the
handler reads its body or looks at the round, so it changes nothing.

The defaults (50 a second, bursts of 200) never meet an honest agent: per round it sends one
POST per step (each also waiting for its next message, so it needs no GET between steps), a long
poll per ``poll_hold`` while it waits, and a few retries with back-off: about nine requests a
round in a five-step secure round of a deployed job (measured: 28 per site over three rounds of
``tests/test_net_job.py``'s job, about 12 a second at most). :func:`rate_for_poll_hold` keeps the
refill above four requests per hold, so an agent whose polls come back at once stays far inside
its budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import RateLimited

__all__ = ["RateLimit", "SiteRateLimiter", "rate_for_poll_hold"]


@dataclass(frozen=True)
class RateLimit:
    """``per_second`` requests a second on average, bursts of up to ``burst``."""

    per_second: float = 50.0
    burst: int = 200

    def __post_init__(self) -> None:
        if not (isinstance(self.per_second, (int, float)) and self.per_second > 0
                and self.per_second != float("inf")):
            raise ValueError("requests_per_second must be a finite number > 0")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError("burst must be an integer >= 1")


def rate_for_poll_hold(limit: RateLimit, poll_hold: float) -> RateLimit:
    """``limit`` with its refill raised, if need be, to four requests per long-poll hold."""
    floor = 4.0 / poll_hold if poll_hold > 0 else limit.per_second
    return limit if limit.per_second >= floor else RateLimit(floor, limit.burst)


class SiteRateLimiter:
    """One token bucket per site (client id); thread-safe; O(1) per request."""

    def __init__(self, limit: RateLimit = RateLimit(), *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[int, list[float]] = {}  # site -> [tokens, last refill time]
        self.refused = 0

    def take(self, site: int) -> None:
        """Spend one token of ``site``'s bucket, or raise RateLimited (nothing spent)."""
        rate, burst = self.limit.per_second, self.limit.burst
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(site)
            if bucket is None:
                bucket = self._buckets[site] = [float(burst), now]
            tokens = min(burst, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
            if tokens >= 1.0:
                bucket[0] = tokens - 1.0
                return
            bucket[0] = tokens
            self.refused += 1
        raise RateLimited((1.0 - tokens) / rate)
