"""`make test` runs the suite in several processes: each must have a Redis database of its own."""

from __future__ import annotations

from tests.support.services import redis_database_for_this_process


def run_of(run_id: str, workers: int) -> list[int]:
    return [
        redis_database_for_this_process({"PYTEST_XDIST_WORKER": f"gw{n}", "PYTEST_XDIST_TESTRUNUID": run_id}, pid=1)
        for n in range(workers)
    ]


def test_the_workers_of_one_run_never_share_a_redis_database() -> None:
    for run_id in ("3f9a", "b71c", "0e22"):
        databases = run_of(run_id, 15)
        assert sorted(databases) == list(range(1, 16))  # database 0 is left to whatever else uses this Redis


def test_runs_side_by_side_start_at_different_databases() -> None:
    assert len({run_of(f"run-{n}", 1)[0] for n in range(40)}) > 5


def test_a_process_outside_xdist_picks_by_its_process_id() -> None:
    assert redis_database_for_this_process({}, pid=44) == 1 + 44 % 15
    assert redis_database_for_this_process({"PYTEST_XDIST_WORKER": "master"}, pid=45) == 1
