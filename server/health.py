"""``/healthz`` (the process answers) and ``/readyz`` (database reachable with the schema this code needs,
broker reachable); and the same schema check for a worker that is starting."""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from flask import Blueprint, current_app, jsonify
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from models.db import create_db_engine
from models.migrate import head_revision, schema_mismatch

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

# A schema found right is read again after this long only: it does not go back by itself, and a load
# balancer asks every few seconds.
SCHEMA_RECHECK_SECONDS = 5.0


# Read once: this code's newest migration does not change while it runs.
_head_revision = functools.cache(head_revision)


def schema_problem(connection: Connection) -> str | None:
    """Why this code cannot work on the database's schema, in one line with the fix; None when it can."""
    current = MigrationContext.configure(connection).get_current_revision()
    if current == _head_revision():
        return None
    if current is None:
        return "the database has no schema: run `moderation migrate`"
    return schema_mismatch(current)


def database_problem(database_url: str) -> str | None:
    """Why a process cannot start work on this database (no SQLite file there, or a schema this code does
    not work on), or None. Raises OperationalError when the database cannot be reached at all."""
    missing = _missing_sqlite_file(database_url)
    if missing is not None:
        # Connecting would create an empty file there, and the next start would blame the schema instead.
        return f"no database file at {missing}: run `moderation migrate`, or point DATABASE_URL or VAR_DIR at it"
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            return schema_problem(connection)
    finally:
        engine.dispose()


def _missing_sqlite_file(database_url: str) -> str | None:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    path = Path(url.database)
    return None if path.exists() else str(path.resolve())


class SchemaCheck:
    """Whether the schema is the one this code needs. A wrong one is read again on every check, so that
    readiness follows a `moderation migrate` at once; each new problem is logged once."""

    def __init__(self, recheck_seconds: float = SCHEMA_RECHECK_SECONDS) -> None:
        self._recheck_seconds = recheck_seconds
        self._right_until = float("-inf")
        self._last_problem: str | None = None

    def ok(self, connection: Connection) -> bool:
        if time.monotonic() < self._right_until:
            return True
        try:
            problem = schema_problem(connection)
        except SQLAlchemyError as error:  # reachable, yet its migrations table cannot be read (permissions?)
            problem = f"cannot read the schema's version: {_first_line(error)}"
        if problem is None:
            self._right_until = time.monotonic() + self._recheck_seconds
        elif problem != self._last_problem:
            log.warning("not ready: %s", problem)
        self._last_problem = problem
        return problem is None


def _first_line(error: SQLAlchemyError) -> str:
    reason = str(getattr(error, "orig", None) or error).strip()
    return reason.splitlines()[0] if reason else type(error).__name__


@bp.record_once
def _one_schema_check_per_app(state: BlueprintSetupState) -> None:
    state.app.extensions["schema_check"] = SchemaCheck()


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    database, schema = _database_and_schema_ok()
    checks = {"database": database, "schema": schema, "broker": _broker_ok()}
    ready = all(checks.values())
    return jsonify(status="ready" if ready else "unavailable", checks=checks), 200 if ready else 503


def _database_and_schema_ok() -> tuple[bool, bool]:
    """(reachable, schema at this code's migration); an unreachable database says nothing of its schema."""
    schema: SchemaCheck = current_app.extensions["schema_check"]
    try:
        with current_app.extensions["moderation"].sessions() as session:
            session.execute(text("SELECT 1"))
            return True, schema.ok(session.connection())
    except SQLAlchemyError:
        return False, False


def _broker_ok() -> bool:
    url = current_app.config["SETTINGS"].broker_url
    try:
        client = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (RedisError, OSError, ValueError):
        return False
