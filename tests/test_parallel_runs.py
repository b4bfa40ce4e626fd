"""`make test` runs the suite in several processes, and runs may go side by side on one machine: each test
process must have a Redis database of its own, since it empties it before every test."""

from __future__ import annotations

import uuid

import pytest
import redis

from tests.support.services import (
    CLAIM_KEY,
    CLAIM_SECONDS,
    SYSTEM_REDIS,
    RedisDatabaseClaim,
    first_redis_database_to_try,
    redis_reachable,
)


def seconds_left(admin: redis.Redis, key: str) -> int:
    ttl = admin.ttl(key)
    assert isinstance(ttl, int)
    return ttl


def first_of(run_id: str, worker: int) -> int:
    environ = {"PYTEST_XDIST_WORKER": f"gw{worker}", "PYTEST_XDIST_TESTRUNUID": run_id}
    return first_redis_database_to_try(environ, pid=1)


def test_the_workers_of_one_run_start_at_different_databases() -> None:
    for run_id in ("3f9a", "b71c", "0e22"):
        assert sorted(first_of(run_id, n) for n in range(15)) == list(range(1, 16))  # 0 is for the claims


def test_runs_side_by_side_start_at_different_databases() -> None:
    assert len({first_of(f"run-{n}", 0) for n in range(40)}) > 5


def test_a_process_outside_xdist_starts_where_its_process_id_says() -> None:
    assert first_redis_database_to_try({}, pid=44) == 1 + 44 % 15
    assert first_redis_database_to_try({"PYTEST_XDIST_WORKER": "master"}, pid=45) == 1


def test_this_process_holds_the_database_it_uses(redis_url: str, redis_claim: RedisDatabaseClaim | None) -> None:
    if redis_claim is None:
        pytest.skip("the bundled redis-server is this process's alone")
    admin = redis.Redis.from_url(f"{SYSTEM_REDIS}/0")
    key = CLAIM_KEY.format(int(redis_url.rsplit("/", 1)[1]))
    assert admin.get(key) == redis_claim.token.encode()
    assert CLAIM_SECONDS - 60 < seconds_left(admin, key) <= CLAIM_SECONDS  # renewed before this test


@pytest.fixture
def own_keys() -> str:
    """Claims under keys of this test's own, so that the claims of the processes running tests stay whole."""
    if not redis_reachable(SYSTEM_REDIS):
        pytest.skip("claims are for a Redis that runs shared; the bundled one is each process's own")
    return f"moderation-tests-selftest:{uuid.uuid4().hex}:database:{{}}"


def test_processes_that_start_at_one_database_get_different_ones_until_none_is_left(own_keys: str) -> None:
    claims = [RedisDatabaseClaim(SYSTEM_REDIS, key=own_keys) for _ in range(16)]
    held = [claim.claim(first=5) for claim in claims]
    assert held[:3] == [5, 6, 7] and sorted(held[:15]) == list(range(1, 16))  # type: ignore[type-var]
    assert held[15] is None  # the conftest then starts a bundled redis-server
    claims[3].release()
    assert claims[15].claim(first=5) == 8  # given back, and taken by the next to look
    for claim in claims:
        claim.release()
    assert not redis.Redis.from_url(f"{SYSTEM_REDIS}/0").keys(own_keys.format("*"))


def test_a_claim_that_lapsed_and_was_taken_is_neither_renewed_nor_released(own_keys: str) -> None:
    admin = redis.Redis.from_url(f"{SYSTEM_REDIS}/0")
    mine, theirs = RedisDatabaseClaim(SYSTEM_REDIS, key=own_keys), RedisDatabaseClaim(SYSTEM_REDIS, key=own_keys)
    assert mine.claim(first=2) == 2
    admin.delete(own_keys.format(2))  # lapsed: this process was stopped in a debugger for an hour
    assert theirs.claim(first=2) == 2
    admin.expire(own_keys.format(2), 30)
    mine.renew()
    mine.release()
    assert admin.get(own_keys.format(2)) == theirs.token.encode() and seconds_left(admin, own_keys.format(2)) <= 30
    theirs.release()
    assert admin.get(own_keys.format(2)) is None
