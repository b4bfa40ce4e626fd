"""Intake rate limits per site and per author IP, counted in Redis (``moderation.ratelimits``).

The limits apply inside the view, after the signature check: before it, strangers could use up a site's
quota. Fixed windows: one INCR per count; intake limits are generous, so the edge effect is harmless.
Every request counts, retries included; over a limit, a retry of a delivery already accepted is still
answered as the repeat it is (``webhooks.intake``), so only then does the view look it up.
The author is counted by a keyed hash of their network (``moderation.ratelimits.pseudonym``): no key in Redis,
nor in its append-only file, names their address.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask
from limits import RateLimitItem, parse_many

from models.entities import author_network
from moderation.ratelimits import SharedLimits, pseudonym


@dataclass(frozen=True, slots=True)
class Limited:
    scope: str
    retry_after: int


class IntakeLimits:
    def __init__(self, redis_url: str, per_site: str, per_author_ip: str, secret_key: str | bytes) -> None:
        # Parsed here so a bad setting stops the start.
        self._items: dict[str, list[RateLimitItem]] = {
            "site": parse_many(per_site),
            "author_ip": parse_many(per_author_ip),
        }
        self._counts = SharedLimits(redis_url, "intake", "fixed-window")
        self._secret_key = secret_key  # the app's SECRET_KEY, which names authors in the counters' keys

    def init_app(self, app: Flask) -> None:
        app.extensions["intake_limits"] = self

    def check(self, site: str, author_ip: str | None) -> Limited | None:
        """Count this request; the first limit it goes over, or None."""
        keys = [("site", site)]
        if author_ip:
            keys.append(("author_ip", f"{site}|{pseudonym(self._secret_key, author_network(author_ip))}"))
        for scope, key in keys:
            wait = self._counts.over_limit(self._items[scope], scope, key)
            if wait is not None:
                return Limited(scope, wait)
        return None
