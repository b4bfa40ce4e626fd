"""Shared rate limits: counted in Redis across processes, in memory while Redis is away, back in Redis after."""

from __future__ import annotations

from typing import cast

import pytest
import redis
from limits import parse, parse_many

from moderation import ratelimits
from moderation.ratelimits import SharedLimits
from tests.support.services import BundledRedis


def _keys(redis_url: str, namespace: str) -> list[str]:
    return [key.decode() for key in cast(list[bytes], redis.Redis.from_url(redis_url).keys(f"*{namespace}*"))]


def test_two_processes_share_one_count(redis_url: str) -> None:
    first, second = SharedLimits(redis_url, "t-shared"), SharedLimits(redis_url, "t-shared")
    item = parse("3/minute")
    answers = [limits.over_limit([item], "site-a") for limits in (first, second, first, second)]
    assert answers[:3] == [None, None, None]
    assert answers[3] is not None and 1 <= answers[3] <= 60
    assert second.over_limit([item], "site-b") is None  # another key, another count


def test_a_moving_window_is_exact(redis_url: str) -> None:
    limits = SharedLimits(redis_url, "t-moving", "moving-window")
    item = parse("2/hour")
    answers = [limits.over_limit([item], "ip", "198.51.100.1") for _ in range(3)]
    assert answers[:2] == [None, None]
    assert answers[2] is not None and answers[2] > 60  # the oldest count of the hour leaves in about an hour


def test_counts_go_to_memory_while_redis_fails_and_back_to_redis_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimits, "REDIS_RETRY_SECONDS", 0.0)  # ask Redis again at every count
    own_redis = BundledRedis().start()  # one of its own, to stop and start again
    limits = SharedLimits(own_redis.url, "t-fallback")
    try:
        item = parse("2/minute")
        assert limits.over_limit([item], "k") is None  # one count, in Redis (which keeps it across a restart)
        own_redis.stop()
        answers = [limits.over_limit([item], "k") for _ in range(3)]
        assert answers[:2] == [None, None] and answers[2] is not None  # the limit holds, counted in this process
        own_redis.start()
        assert limits.over_limit([item], "k") is None  # back in Redis: its count goes on from one
        assert limits.over_limit([item], "k") is not None
    finally:
        limits.close()  # else its socket to a Redis that is gone is left for the garbage collector to warn about
        own_redis.remove()


def test_every_limit_of_a_setting_counts(redis_url: str) -> None:
    limits = SharedLimits(redis_url, "t-many")
    items = parse_many("100/minute;3/hour")  # the hourly cap bites first
    answers = [limits.over_limit(items, "k") for _ in range(4)]
    assert answers[:3] == [None, None, None]
    assert answers[3] is not None and answers[3] > 60  # the hour's window, not the minute's
