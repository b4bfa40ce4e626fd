"""Shared rate limits: counted in Redis across processes, in memory while Redis is away, back in Redis after."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import pytest
import redis
from limits import parse, parse_many

from dashboard.auth import LoginLimits
from moderation import ratelimits
from moderation.ratelimits import SharedLimits
from server.runner import Supervisor, start_bundled_redis
from tests.support.services import BundledRedis
from webhooks.ratelimit import IntakeLimits


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


AUTHOR_IP = "198.51.100.77"
AUTHOR_IPV6 = "2001:db8:77:1::9"
SIGNING_IN = ("203.0.113.45", "zeb.quackenbush@erase-me.example")
SECRET_KEY = "test-secret-key-" * 3


def test_no_counter_in_the_bundled_redis_or_its_files_names_an_author_or_whoever_signs_in(tmp_path: Path) -> None:
    """A cold review's test: the intake counters' keys named the author's IP (the sign-in ones the client's IP
    and the e-mail typed), and the bundled Redis (compose's too) runs with appendonly: expired long ago, the key
    names stayed on disk in the append-only file, beyond RETAIN_PERSONAL_DAYS and any erasure. They name a keyed
    hash of the value now."""
    supervisor = Supervisor()
    try:
        url = start_bundled_redis(supervisor, tmp_path, {})
        intake = IntakeLimits(url, "1200/minute", "20/second", SECRET_KEY)
        assert intake.check("backpain-advisor", AUTHOR_IP) is None
        assert intake.check("backpain-advisor", AUTHOR_IPV6) is None
        LoginLimits(url, "10/minute", SECRET_KEY).count_attempt(*SIGNING_IN)
        personal = [AUTHOR_IP, "2001:db8:77:1::/64", *SIGNING_IN]
        keys = cast(list[bytes], redis.Redis.from_url(url).keys("*"))
        assert len(keys) == 5, keys  # the site's count, the two authors', the client's and the e-mail's
        assert any(b"backpain-advisor" in key for key in keys)  # a site's name is no one's
        assert [key for key in keys if any(value.encode() in key.lower() for value in personal)] == []
        time.sleep(1.5)  # appendfsync everysec
        on_disk = [
            (path.name, value)
            for path in (tmp_path / "redis").rglob("*")
            if path.is_file()
            for value in personal
            if value.encode() in path.read_bytes().lower()
        ]
        assert on_disk == []
    finally:
        supervisor.stop_all()


def test_the_same_value_is_counted_under_the_same_key_by_every_web_process_and_only_with_the_same_key(
    redis_url: str,
) -> None:
    """Every web process has the same SECRET_KEY: they count one author together, as they did by the address."""
    first, second = (IntakeLimits(redis_url, "1200/minute", "2/minute", SECRET_KEY) for _ in range(2))
    other_key = IntakeLimits(redis_url, "1200/minute", "2/minute", "another-secret-key-" * 2)
    site, ip = "t-pseudonyms", "198.51.100.78"
    assert [first.check(site, ip), second.check(site, ip)] == [None, None]
    refused = first.check(site, ip)
    assert refused is not None and refused.scope == "author_ip"
    assert other_key.check(site, ip) is None  # another key, another name: a deployment's own counts
