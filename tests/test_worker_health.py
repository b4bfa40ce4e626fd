"""A worker's own health: its metrics are scraped on its host, and it refuses a database it cannot work on."""

from __future__ import annotations

import ast
import logging
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import Counter
from sqlalchemy.engine import make_url

from models.migrate import head_revision, upgrade_database
from server.factory import build_celery
from server.metrics import serve_worker_metrics
from server.runner import worker_args
from server.settings import Settings
from tests.conftest import fast_settings
from tests.support.processes import Stack, service_env, wait_until
from tests.support.services import POSTGRES_ADMIN_URL, free_port, fresh_postgres_database, postgres_reachable
from workers.app import CLASSIFY_TASK

ROOT = Path(__file__).resolve().parent.parent
needs_postgres = pytest.mark.skipif(not postgres_reachable(), reason="PostgreSQL is not reachable at 127.0.0.1:5432")


# --- metrics -------------------------------------------------------------------------------------------


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(settings, tmp_path)
    yield stack
    stack.stop_all()


@pytest.mark.slow
def test_a_worker_serves_the_counters_its_pool_processes_write(
    stack: Stack, settings: Settings, tmp_path: Path
) -> None:
    """No model is active, so the classify task is put off: the runbook's first alert, seen on the worker."""
    port = free_port()
    folder = tmp_path / "worker-metrics"  # the worker's own, as on a host (or container) without web
    folder.mkdir()
    worker = stack.worker(WORKER_METRICS_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(folder))
    url = f"http://127.0.0.1:{port}/metrics"
    wait_until(lambda: _scrape(url) is not None, timeout=60, what="the worker's metrics port", proc=worker)

    build_celery(settings).send_task(CLASSIFY_TASK, args=[1])

    wait_until(
        lambda: "moderation_model_unavailable_total 1.0" in (_scrape(url) or ""),
        timeout=60,
        what="the worker's counter on its metrics port",
        proc=worker,
    )
    assert f"worker metrics at http://127.0.0.1:{port}/metrics" in worker.log()


# --- the container's health check ---------------------------------------------------------------------


def health_check(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """docker-compose.yml's worker health check, run as the container runs it (its settings from the environment)."""
    return subprocess.run(
        [sys.executable, "-m", "server.worker_ping", *args],
        env=service_env(settings, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def ping_settings(redis_url: str, tmp_path: Path) -> Settings:
    """Settings for a worker the health check pings: the broker is what matters, so one database (SQLite) will do."""
    database_url = f"sqlite:///{tmp_path / 'moderation.db'}"
    upgrade_database(database_url)
    return fast_settings(database_url, redis_url, tmp_path / "var")


@pytest.fixture
def ping_stack(ping_settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(ping_settings, tmp_path)
    yield stack
    stack.stop_all()


@pytest.mark.slow
def test_the_health_check_passes_for_this_hosts_worker_only(ping_stack: Stack, ping_settings: Settings) -> None:
    """Each replica of `--scale worker=N` checks its own node: a ping another node answers does not pass it."""
    settings = ping_settings
    assert health_check(settings, "--timeout", "1").returncode == 1  # no worker yet
    worker = ping_stack.worker()
    wait_until(
        lambda: health_check(settings, "--timeout", "2").returncode == 0,
        timeout=60,
        what="the health check to pass",
        proc=worker,
    )
    passed = health_check(settings, "--timeout", "2")
    assert passed.returncode == 0 and f"celery@{socket.gethostname()} answered" in passed.stdout
    elsewhere = health_check(settings, "--node", "celery@another-container", "--timeout", "1")
    assert elsewhere.returncode == 1, elsewhere
    assert "celery@another-container did not answer within 1 s" in elsewhere.stderr


def test_the_health_check_fails_soon_without_the_broker(ping_settings: Settings) -> None:
    """Redis down: unhealthy, said in one line, well inside the check's timeout rather than by being killed."""
    started = time.monotonic()
    result = health_check(ping_settings, "--timeout", "2", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert time.monotonic() - started < 15
    assert "cannot reach the broker" in result.stderr and "Traceback" not in result.stderr


def test_the_health_check_loads_neither_the_models_libraries_nor_the_app(ping_settings: Settings) -> None:
    """`celery -A server.celery_entry inspect ping` loaded the whole app (scikit-learn, SciPy, Flask, the ORM)
    before it pinged: 3.5 s on an idle two-core host, 20.7 s measured on a busy one against a 30 s timeout."""
    # A whole check (no worker answers here), so that what the ping itself loads is counted too.
    probe = (
        "import runpy, sys; sys.argv = ['worker_ping', '--timeout', '0.5']\n"
        "try:\n    runpy.run_module('server.worker_ping', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted({name.partition('.')[0] for name in sys.modules}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=service_env(ping_settings), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = set(ast.literal_eval(result.stdout.splitlines()[-1]))
    heavy = {"sklearn", "scipy", "numpy", "flask", "models", "moderation", "dashboard", "webhooks", "skops"}
    assert not loaded & heavy, sorted(loaded & heavy)


def _scrape(url: str) -> str | None:
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def test_the_metrics_server_answers_with_this_processes_counters() -> None:
    name = f"worker_health_test_{uuid.uuid4().hex[:8]}"
    Counter(name, "A counter only this test increments.").inc(3)
    served = serve_worker_metrics("127.0.0.1", free_port())
    assert served is not None
    server = served.result(timeout=0)  # a free port is served at once
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).text
        assert f"{name}_total 3.0" in text
    finally:
        server.shutdown()
        server.server_close()


def test_a_taken_metrics_port_is_taken_over_once_freed(caplog: pytest.LogCaptureFixture) -> None:
    """A rolling restart: the new worker starts while the old one serves the port, and serves it once freed."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with caplog.at_level(logging.INFO, logger="server.metrics"):
        try:
            served = serve_worker_metrics("127.0.0.1", port, retry_every=0.05)
            assert served is not None
            time.sleep(0.3)  # several attempts while the port is still taken
            assert not served.done()
        finally:
            taken.close()  # the old worker stops
        server = served.result(timeout=5)
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            assert "# TYPE " in response.text
        finally:
            server.shutdown()
            server.server_close()
    records = [record for record in caplog.records if record.name == "server.metrics"]
    [warning] = [record.getMessage() for record in records if record.levelno == logging.WARNING]
    assert f"cannot listen on 127.0.0.1:{port}" in warning
    assert "trying again every 0.05s" in warning
    assert "PROMETHEUS_MULTIPROC_DIR" in warning and "WORKER_METRICS_PORT" in warning
    [info] = [record.getMessage() for record in records if record.levelno == logging.INFO]
    assert f"now served at http://127.0.0.1:{port}/metrics" in info


def test_an_address_this_host_does_not_have_is_said_once_and_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    before = set(threading.enumerate())
    with caplog.at_level(logging.INFO, logger="server.metrics"):
        assert serve_worker_metrics("192.0.2.1", free_port(), retry_every=0.05) is None  # TEST-NET-1
        time.sleep(0.3)  # a retry thread would have tried several times by now
    assert [thread.name for thread in set(threading.enumerate()) - before] == []
    [line] = [record.getMessage() for record in caplog.records if record.name == "server.metrics"]
    assert "cannot listen on 192.0.2.1:" in line
    assert "WORKER_METRICS_HOST" in line
    assert "trying again" not in line


def test_port_zero_serves_nothing() -> None:
    assert serve_worker_metrics("127.0.0.1", 0) is None


def test_the_local_runs_worker_leaves_the_port_to_workers_unless_asked(tmp_path: Path) -> None:
    """`moderation run`'s web reads the folder its worker writes; a worker beside it keeps the default port."""
    assert worker_args(Settings(var_dir=tmp_path)) == ["worker", "--metrics-port", "0"]
    assert worker_args(Settings(var_dir=tmp_path, worker_metrics_port=9900)) == ["worker"]


# --- the database, checked when the worker starts ------------------------------------------------------


def start_worker(settings: Settings, database_url: str) -> subprocess.CompletedProcess[str]:
    """`moderation worker` on ``database_url``: it must stop by itself (on the old code it ran on)."""
    env = service_env(settings, DATABASE_URL=database_url, LOG_FORMAT="text", WORKER_METRICS_PORT="0")
    argv = [sys.executable, "-m", "server", "worker", "--concurrency", "1"]
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def assert_refused(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    for part in expected:
        assert part in last, done.stderr
    assert "Traceback" not in done.stderr
    assert "ready" not in done.stdout + done.stderr  # never joined the queue


@pytest.fixture
def worker_settings(redis_url: str, tmp_path: Path) -> Settings:
    return fast_settings(f"sqlite:///{tmp_path / 'unused.db'}", redis_url, tmp_path / "var")


@needs_postgres
def test_a_worker_refuses_a_database_that_does_not_exist(worker_settings: Settings) -> None:
    name = f"moderation_missing_{uuid.uuid4().hex[:8]}"
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    assert_refused(start_worker(worker_settings, url), f'database "{name}" does not exist', "check DATABASE_URL")


@needs_postgres
def test_a_worker_refuses_a_database_without_the_schema(worker_settings: Settings) -> None:
    with fresh_postgres_database() as url:
        assert_refused(start_worker(worker_settings, url), "the database has no schema", "moderation migrate")


@needs_postgres
def test_a_worker_refuses_a_schema_behind_this_code(worker_settings: Settings) -> None:
    with fresh_postgres_database() as url:
        upgrade_database(url, "0004")
        assert_refused(
            start_worker(worker_settings, url),
            "the database schema is at 0004",
            f"needs {head_revision()}",
            "moderation migrate",
        )


def start_beat(settings: Settings, database_url: str) -> subprocess.CompletedProcess[str]:
    """`moderation beat` on ``database_url``: it must stop by itself (the old code ran on, relaying nothing)."""
    env = service_env(settings, DATABASE_URL=database_url, LOG_FORMAT="text")
    argv = [sys.executable, "-m", "server", "beat"]
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)


@needs_postgres
def test_beat_refuses_a_database_without_the_schema_as_a_worker_does(worker_settings: Settings) -> None:
    with fresh_postgres_database() as url:
        assert_refused(start_beat(worker_settings, url), "the database has no schema", "moderation migrate")


@pytest.mark.parametrize("start", [start_worker, start_beat], ids=["worker", "beat"])
def test_a_service_refuses_a_sqlite_file_that_is_not_there_and_does_not_make_one(
    start: Callable[[Settings, str], subprocess.CompletedProcess[str]], worker_settings: Settings, tmp_path: Path
) -> None:
    missing = tmp_path / "elsewhere" / "moderation.db"
    missing.parent.mkdir()
    assert_refused(start(worker_settings, f"sqlite:///{missing}"), f"no database file at {missing}")
    assert not missing.exists()
