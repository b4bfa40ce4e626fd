"""`make test` runs the suite in several processes, and runs may go side by side on one machine: each test
process must have a Redis database of its own, since it empties it before every test."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import redis

from tests.support.services import (
    CLAIM_KEY,
    SYSTEM_REDIS,
    claimed_redis_database,
    first_redis_database_to_try,
    redis_reachable,
)


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


def test_this_process_holds_the_database_it_uses(redis_url: str) -> None:
    if not redis_url.startswith(SYSTEM_REDIS):
        pytest.skip("the bundled redis-server is this process's alone")
    database = int(redis_url.rsplit("/", 1)[1])
    assert redis.Redis.from_url(f"{SYSTEM_REDIS}/0").get(CLAIM_KEY.format(database)) is not None


def test_processes_that_start_at_the_same_database_get_different_ones_until_none_is_left(
    redis_server_url: str,
) -> None:
    if not redis_reachable(SYSTEM_REDIS):
        pytest.skip("claims are for a Redis that runs shared; the bundled one is each process's own")
    with ExitStack() as stack:
        held = []
        for _ in range(15):
            try:
                held.append(stack.enter_context(claimed_redis_database(SYSTEM_REDIS, first=5)))
            except RuntimeError as error:  # the others this machine's runs hold right now, this one's included
                assert "are all held by other test processes" in str(error)
                break
        assert len(held) == len(set(held))
        assert int(redis_server_url.rsplit("/", 1)[1]) not in held  # this process's own was not given out again
    admin = redis.Redis.from_url(f"{SYSTEM_REDIS}/0")
    assert not any(admin.exists(CLAIM_KEY.format(each)) for each in held)  # given back
