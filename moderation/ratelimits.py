"""Rate limits counted in Redis and shared by every web process, with the ``limits`` library.

Used by intake (per site, per author IP) and by the dashboard's sign-in (per client IP, per e-mail). With
Redis unreachable the counts move to this process's memory for a few seconds at a time, until Redis answers
again: a limit keeps working per process, and nothing waits on a Redis that hangs.

A counter's key names a person (an IP address, a network, an e-mail) by ``pseudonym`` only (a keyed hash,
``moderation.keyed``): Redis keeps the names of expired keys on disk in its append-only file (the bundled Redis
and compose's run with appendonly) until it rewrites that file, long after the window, beyond retention and any
erasure.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Literal

from limits import RateLimitItem
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, RateLimiter

from moderation.keyed import keyed_digest

log = logging.getLogger(__name__)

# Short timeouts: a Redis that hangs must not hold up a request.
REDIS_OPTIONS = {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}
# After Redis fails, this process counts in memory for this long before it asks Redis again.
REDIS_RETRY_SECONDS = 5.0

# How long a pseudonym is: 16 bytes of HMAC-SHA256, in hex. Collisions between the values counted are out of reach.
PSEUDONYM_BYTES = 16

Strategy = Literal["fixed-window", "moving-window"]
_STRATEGIES: dict[str, type[FixedWindowRateLimiter] | type[MovingWindowRateLimiter]] = {
    "fixed-window": FixedWindowRateLimiter,  # one INCR per count; a burst across a window's edge may double
    "moving-window": MovingWindowRateLimiter,  # exact, one sorted-set entry per count
}


class SharedLimits:
    def __init__(self, redis_url: str, namespace: str, strategy: Strategy = "fixed-window") -> None:
        limiter = _STRATEGIES[strategy]
        self._namespace = namespace
        self._shared: RateLimiter = limiter(storage_from_string(redis_url, **REDIS_OPTIONS))
        self._local: RateLimiter = limiter(MemoryStorage())
        self._shared_down_until = 0.0

    def close(self) -> None:
        """Let go of the Redis connections, for an owner done with these limits before its process ends."""
        client = getattr(self._shared.storage, "storage", None)  # limits' RedisStorage keeps its redis client
        if client is not None:
            client.close()

    def over_limit(self, items: Sequence[RateLimitItem], *key: str) -> int | None:
        """Count one request for ``key`` against each limit ("10/minute;100/hour" is two): None while within
        them all, else seconds until the first one it went over resets."""
        for item in items:
            limiter, allowed = self._hit(item, key)
            if not allowed:
                return _retry_after(limiter, item, (self._namespace, *key))
        return None

    def _hit(self, item: RateLimitItem, key: tuple[str, ...]) -> tuple[RateLimiter, bool]:
        if time.monotonic() >= self._shared_down_until:
            try:
                return self._shared, self._shared.hit(item, self._namespace, *key)
            except Exception:  # any failure of the store: count here rather than refuse or lose the request
                log.warning("rate-limit store unreachable; counting in this process for now", exc_info=True)
                self._shared_down_until = time.monotonic() + REDIS_RETRY_SECONDS
        return self._local, self._local.hit(item, self._namespace, *key)


def pseudonym(secret_key: str | bytes, value: str) -> str:
    """The name a counter gives ``value`` (an IP address, a network, an e-mail) in Redis: HMAC-SHA256 keyed with
    the app's SECRET_KEY, truncated to ``PSEUDONYM_BYTES``. Every web process has the same SECRET_KEY, so all
    count one value under one name; without the key, the name confirms no guess of the value (a plain hash of
    an IPv4 address would be reversed by trying all 2**32)."""
    return keyed_digest(secret_key, "rate-limit", value.encode())[:PSEUDONYM_BYTES].hex()


def _retry_after(limiter: RateLimiter, item: RateLimitItem, key: tuple[str, ...]) -> int:
    """Seconds until the breached window resets (its whole length if the store cannot say)."""
    try:
        reset_at = limiter.get_window_stats(item, *key).reset_time
    except Exception:  # the store went away between the count and this read
        return item.get_expiry()
    return max(1, math.ceil(reset_at - time.time()))
