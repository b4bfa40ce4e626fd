"""Intake rate limits per site and per author IP, counted in Redis with the ``limits`` library.

The limits apply inside the view, after the signature check (before it, strangers could use up a site's
quota). They use ``limits`` (the counting engine under Flask-Limiter) directly: Flask-Limiter's per-request
bookkeeping cost more than the two Redis counts themselves, and intake needs none of its routing. With
Redis unreachable intake keeps answering: the counts move to this process's memory for a few seconds at a
time until Redis answers again, and the outbox keeps the comments safe.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from flask import Flask
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

log = logging.getLogger(__name__)

# Short timeouts: a Redis that hangs must not hold up intake.
REDIS_OPTIONS = {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}
# After Redis fails, this process counts in memory for this long before it asks Redis again.
REDIS_RETRY_SECONDS = 5.0
NAMESPACE = "intake"


@dataclass(frozen=True, slots=True)
class Limited:
    scope: str
    retry_after: int


class IntakeLimits:
    """Fixed windows (one INCR per count: intake limits are generous, the edge effect is harmless)."""

    def __init__(self, redis_url: str, per_site: str, per_author_ip: str) -> None:
        # Parsed here so a bad setting stops the start.
        self._items: dict[str, RateLimitItem] = {"site": parse(per_site), "author_ip": parse(per_author_ip)}
        self._shared = FixedWindowRateLimiter(storage_from_string(redis_url, **REDIS_OPTIONS))
        self._local = FixedWindowRateLimiter(MemoryStorage())
        self._shared_down_until = 0.0

    def init_app(self, app: Flask) -> None:
        app.extensions["intake_limits"] = self

    def check(self, site: str, author_ip: str | None) -> Limited | None:
        """Count this request; the first limit it goes over, or None."""
        counts = [("site", site)] + ([("author_ip", f"{site}|{author_ip}")] if author_ip else [])
        for scope, key in counts:
            limiter, allowed = self._hit(self._items[scope], scope, key)
            if not allowed:
                return Limited(scope, _retry_after(limiter, self._items[scope], scope, key))
        return None

    def _hit(self, item: RateLimitItem, scope: str, key: str) -> tuple[FixedWindowRateLimiter, bool]:
        if time.monotonic() >= self._shared_down_until:
            try:
                return self._shared, self._shared.hit(item, NAMESPACE, scope, key)
            except Exception:  # any failure of the store: count here rather than refuse or lose the comment
                log.warning("rate-limit store unreachable; counting in this process for now", exc_info=True)
                self._shared_down_until = time.monotonic() + REDIS_RETRY_SECONDS
        return self._local, self._local.hit(item, NAMESPACE, scope, key)


def _retry_after(limiter: FixedWindowRateLimiter, item: RateLimitItem, scope: str, key: str) -> int:
    """Seconds until the breached window resets (its whole length if the store cannot say)."""
    try:
        reset_at = limiter.get_window_stats(item, NAMESPACE, scope, key).reset_time
    except Exception:  # the store went away between the count and this read
        return item.get_expiry()
    return max(1, math.ceil(reset_at - time.time()))
