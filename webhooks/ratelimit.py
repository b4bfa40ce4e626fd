"""Intake rate limits per site and per author IP: Flask-Limiter counting in Redis.

The limits apply inside the view, after the signature check (a decorator would run before it and let
strangers use up a site's quota), through Flask-Limiter's documented use of ``limiter.limit(...)`` as a
context manager. With Redis unreachable intake keeps answering: the counts move to each process's memory
until Redis answers again, and the outbox keeps the comments safe.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import cast

from flask import Flask, g
from flask_limiter import Limiter, RateLimitExceeded, RouteLimit
from limits import RateLimitItem, parse

# Short timeouts: a Redis that hangs must not hold up intake.
REDIS_OPTIONS = {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}


@dataclass(frozen=True, slots=True)
class Limited:
    scope: str
    retry_after: int


def _site_key() -> str:
    return str(g.intake_limit_site)


def _author_ip_key() -> str:
    return str(g.intake_limit_author_ip)


def _no_default_key() -> str:
    return ""  # every intake limit names its own key; a limit with an empty key is skipped, never shared


class IntakeLimits:
    def __init__(self, redis_url: str, per_site: str, per_author_ip: str) -> None:
        # Parsed here so a bad setting stops the start; Flask-Limiter would only log it and not limit at all.
        self._items: dict[str, RateLimitItem] = {"site": parse(per_site), "author_ip": parse(per_author_ip)}
        self._limiter = Limiter(
            _no_default_key,
            storage_uri=redis_url,
            storage_options=cast(dict[str, str | int], dict(REDIS_OPTIONS)),
            key_prefix="intake",
            strategy="fixed-window",  # one INCR per check: intake limits are generous, the edge effect is harmless
            headers_enabled=False,  # it would send Retry-After on every 202 too; a 429 gets its own below
            in_memory_fallback_enabled=True,  # Redis down: count in memory, keep answering, check Redis again later
            swallow_errors=True,  # any other failure of the limiter lets the comment in rather than lose it
        )
        self._per_site: RouteLimit = self._limiter.limit(per_site, key_func=_site_key, scope="site")
        self._per_author_ip: RouteLimit = self._limiter.limit(per_author_ip, key_func=_author_ip_key, scope="author_ip")

    def init_app(self, app: Flask) -> None:
        self._limiter.init_app(app)
        app.extensions["intake_limits"] = self

    def check(self, site: str, author_ip: str | None) -> Limited | None:
        """Count this request (within a request context); the first limit it goes over, or None."""
        g.intake_limit_site = site
        g.intake_limit_author_ip = f"{site}|{author_ip}"
        try:
            with self._per_site:
                pass
        except RateLimitExceeded:
            return Limited("site", self._retry_after("site"))
        if author_ip:
            try:
                with self._per_author_ip:
                    pass
            except RateLimitExceeded:
                return Limited("author_ip", self._retry_after("author_ip"))
        return None

    def _retry_after(self, scope: str) -> int:
        """Seconds until the breached window resets (its whole length if the store cannot say)."""
        breached = self._limiter.current_limit
        try:
            reset_at = breached.window.reset_time if breached is not None else None
        except Exception:  # the store went away between the count and this read
            reset_at = None
        if reset_at is None:
            return self._items[scope].get_expiry()
        return max(1, math.ceil(reset_at - time.time()))
