"""Intake rate limits per site and per author IP, counted in Redis with the ``limits`` library
(the engine under Flask-Limiter). Checked after the signature, so strangers cannot use up a site's quota.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limited:
    scope: str
    retry_after: int


class IntakeLimits:
    def __init__(self, redis_url: str, per_site: str, per_author_ip: str) -> None:
        # Short timeouts: with Redis down, intake must still answer quickly (the outbox keeps comments safe).
        storage = RedisStorage(
            redis_url, key_prefix="moderation-limits", socket_connect_timeout=0.2, socket_timeout=0.2
        )
        self._limiter = FixedWindowRateLimiter(storage)
        self._per_site: RateLimitItem = parse(per_site)
        self._per_author_ip: RateLimitItem = parse(per_author_ip)

    def check(self, site: str, author_ip: str | None) -> Limited | None:
        """Count this request; the first limit it goes over, or None. Fails open if Redis is unreachable."""
        checks: list[tuple[str, RateLimitItem, tuple[str, ...]]] = [("site", self._per_site, (site,))]
        if author_ip:
            checks.append(("author_ip", self._per_author_ip, (site, author_ip)))
        try:
            for scope, item, identifiers in checks:
                if not self._limiter.hit(item, *identifiers):
                    reset = self._limiter.get_window_stats(item, *identifiers).reset_time
                    return Limited(scope, max(1, math.ceil(reset - time.time())))
        except Exception:  # a rate limiter must never turn a Redis outage into lost comments
            log.warning("rate limit store unavailable; allowing the request", exc_info=True)
        return None
