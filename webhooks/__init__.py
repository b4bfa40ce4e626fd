"""Flask intake: the signed comment webhook, the pull API and the OpenAPI document."""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask, current_app
from flask.typing import ResponseReturnValue
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from webhooks import api, intake, openapi  # noqa: F401 - registers the routes on bp
from webhooks.blueprint import bp
from webhooks.context import close_db
from webhooks.responses import unavailable

__all__ = ["bp", "init_app"]

log = logging.getLogger(__name__)

# During an outage every request fails the same way: one line per this many seconds and process tells the
# operator why without burying everything else.
DATABASE_LOG_INTERVAL_SECONDS = 10.0

# PostgreSQL's SQLSTATEs for a table or a column that is not there: a schema behind this code's migrations.
MISSING_SCHEMA_SQLSTATES = frozenset({"42P01", "42703"})  # undefined_table, undefined_column
SQLITE_MISSING_SCHEMA = ("no such table", "no such column")


class EveryFewSeconds:
    """Says yes at most once per interval, across the threads of a process."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._next = float("-inf")
        self._lock = threading.Lock()

    def due(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                return False
            self._next = now + self._seconds
            return True


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.teardown_appcontext(close_db)
    outage_log = EveryFewSeconds(DATABASE_LOG_INTERVAL_SECONDS)
    schema_log = EveryFewSeconds(DATABASE_LOG_INTERVAL_SECONDS)

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeoutError)
    @app.errorhandler(ProgrammingError)
    def database_unavailable(error: SQLAlchemyError) -> ResponseReturnValue:
        # The database is down, overloaded or not migrated yet: the site retries a 503; it must never see a
        # 500 for this.
        if missing_schema(error):
            if schema_log.due():
                log.error(
                    "the database lacks a table or column this code needs (%s): run `moderation migrate`; "
                    "answering 503 until then",
                    driver_message(error),
                )
        elif isinstance(error, ProgrammingError):
            raise error  # a mistake in a query: Flask logs it with its traceback and answers 500
        elif outage_log.due():
            log.warning("database unavailable, answering 503: %s", driver_message(error))
        return unavailable()


def missing_schema(error: SQLAlchemyError) -> bool:
    """The error says a table or a column is missing (PostgreSQL's ProgrammingError, SQLite's OperationalError)."""
    original = getattr(error, "orig", None)
    if getattr(original, "sqlstate", None) in MISSING_SCHEMA_SQLSTATES:
        return True
    return isinstance(error, OperationalError) and str(original).startswith(SQLITE_MISSING_SCHEMA)


def driver_message(error: SQLAlchemyError) -> str:
    """The first line of what the driver said (e.g. 'database "x" does not exist'), never the password."""
    reason = str(getattr(error, "orig", None) or error).strip()
    line = reason.splitlines()[0] if reason else type(error).__name__
    password = make_url(current_app.config["SETTINGS"].effective_database_url).password
    return line.replace(password, "***") if password and len(password) >= 3 else line
