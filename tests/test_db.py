"""The PostgreSQL pool: connections that sat idle are checked before use, busy ones are not; database errors
without the values bound to their statements."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from models import db
from models.db import create_db_engine
from models.entities import Site
from models.migrate import missing_from_schema, schema_revision, upgrade_database


@pytest.fixture
def pg_engine(database_url: str) -> Engine:
    if not database_url.startswith("postgresql"):
        pytest.skip("the idle check is PostgreSQL's (SQLite has no server to lose)")
    return create_db_engine(database_url)


def _count_pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    real_ping = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(1)
        return real_ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_killed_while_idle_is_replaced_on_checkout(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.2)
    pings = _count_pings(pg_engine, monkeypatch)
    killed = _backend_pid(pg_engine)
    other = create_db_engine(pg_engine.url.render_as_string(hide_password=False))
    with other.begin() as connection:  # the server ends the pooled connection, as a restart would
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed})
    other.dispose()
    time.sleep(0.3)
    fresh = _backend_pid(pg_engine)  # no error: the ping found the dead connection and the pool replaced it
    assert fresh != killed and pings
    pg_engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(pg_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    pings = _count_pings(pg_engine, monkeypatch)
    first = _backend_pid(pg_engine)
    for _ in range(20):
        assert _backend_pid(pg_engine) == first
    assert not pings
    pg_engine.dispose()


def test_a_session_whose_flush_failed_is_closed_at_teardown_like_any_other(engine: Engine) -> None:
    sessions = db.make_session_factory(engine)
    with sessions.begin() as session:
        session.add(Site(name="one-site", callback_url=None))
    session = sessions()
    session.add(Site(name="one-site", callback_url=None))
    with pytest.raises(IntegrityError):
        session.flush()
    db.close_at_teardown(session)  # no PendingRollbackError: the close rolls back as it always did
    assert not session.in_transaction()


@pytest.mark.parametrize(("query", "waits_ms"), [("", 30_000), ("?timeout=0.2", 200)])
def test_a_sqlite_url_s_timeout_is_how_long_a_statement_waits_for_a_lock(
    tmp_path: Any, query: str, waits_ms: int
) -> None:
    """30 s by default; `?timeout=` in DATABASE_URL was overridden by the busy timeout set on each connection."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'moderation.db'}{query}")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == waits_ms
    finally:
        engine.dispose()


# --- errors without the statement's values --------------------------------------------------------------

PRIVATE = "my private diagnosis, private.person@example.org"


def test_a_database_error_does_not_carry_the_statements_parameters(engine: Engine) -> None:
    """An error's text goes to the log (an unhandled one with its traceback): with the parameters in it, a
    failed insert logged the comment's text, its author's e-mail and IP."""
    with engine.connect() as connection, pytest.raises(DBAPIError) as raised:
        connection.execute(text("SELECT * FROM no_such_table WHERE body = :body"), {"body": PRIVATE})
    assert "no_such_table" in str(raised.value)  # the statement is still named
    assert PRIVATE not in str(raised.value)


def test_the_migrations_engines_hide_parameters_too(tmp_path: Path) -> None:
    """``moderation migrate`` and its schema checks make engines of their own, not with create_db_engine."""
    url = f"sqlite:///{tmp_path / 'moderation.db'}"
    hidden: list[bool] = []

    def record(connection: Connection) -> None:
        hidden.append(connection.engine.hide_parameters)

    event.listen(Engine, "engine_connect", record)
    try:
        upgrade_database(url)
        schema_revision(url)
        missing_from_schema(url)
    finally:
        event.remove(Engine, "engine_connect", record)
    assert len(hidden) >= 3 and all(hidden), hidden
