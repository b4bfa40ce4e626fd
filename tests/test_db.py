"""The PostgreSQL pool: connections that sat idle are checked before use, busy ones are not; database errors
without the values bound to their statements."""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from models import db
from models.db import create_db_engine
from models.entities import ListEntry, Site
from models.migrate import missing_from_schema, schema_revision, upgrade_database
from server.logs import JsonFormatter


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


# An author's values, as a row that breaks a constraint holds them.
AUTHOR_EMAIL = "zeb.quackenbush@erase-me.example"
AUTHOR_IP = "198.51.100.77"


def _constraint_broken(engine: Engine, constraint: str) -> IntegrityError:
    """A real IntegrityError: a block-list entry for an author's e-mail added twice (a unique constraint), or a
    comment stored without its required columns (NOT NULL) but with its author's e-mail and IP."""
    sessions = db.make_session_factory(engine)
    with sessions.begin() as session:
        site = Site(name="one-site", callback_url=None)
        session.add(site)
        session.flush()
        site_id = site.id
        session.add(ListEntry(list_kind="block", field="author", value=AUTHOR_EMAIL, site_id=site_id))
    with pytest.raises(IntegrityError) as raised, sessions.begin() as session:
        if constraint == "unique":
            session.add(ListEntry(list_kind="block", field="author", value=AUTHOR_EMAIL, site_id=site_id))
        else:
            session.execute(
                text("INSERT INTO comments (site_id, author_email, author_ip) VALUES (:site, :email, :ip)"),
                {"site": site_id, "email": AUTHOR_EMAIL, "ip": AUTHOR_IP},
            )
    return raised.value


@pytest.mark.parametrize("constraint", ["unique", "not_null"])
def test_a_broken_constraints_error_does_not_quote_the_rows_values(engine: Engine, constraint: str) -> None:
    """A review's finding: hide_parameters keeps the values bound to a statement out of its error, but
    PostgreSQL's own message quotes them on its DETAIL line ("Key (list_kind, field, value, site_id)=(block,
    author, zeb…@…, 1) already exists.", "Failing row contains (…, zeb…@…, 198.51.100.77, …)."), and that text
    is logged with an unhandled error's traceback, printed by the command line and shown by the pages. The line
    says its values are hidden; the constraint and the statement are still named; code can still read them from
    the driver's error."""
    error = _constraint_broken(engine, constraint)
    record = logging.LogRecord("workers.tasks", logging.ERROR, __file__, 1, "task failed", None, None)
    record.exc_info = (type(error), error, error.__traceback__)
    texts = {
        "error": str(error),
        "driver's error": str(error.orig),
        "traceback": "".join(traceback.format_exception(error)),
        "log line": JsonFormatter().format(record),
    }
    for where, said in texts.items():
        assert AUTHOR_EMAIL not in said and AUTHOR_IP not in said, f"{where}: {said}"
    assert ("list_entries" if constraint == "unique" else "comments") in str(error)
    if engine.dialect.name == "postgresql":
        assert "DETAIL:  (hidden: it can quote the row's values)" in str(error)
        assert AUTHOR_EMAIL in error.orig.diag.message_detail  # type: ignore[union-attr]


@pytest.mark.parametrize("refused", ["json", "cast"])
def test_a_refused_values_error_does_not_quote_it(engine: Engine, refused: str) -> None:
    """A review's finding: PostgreSQL also quotes a value it refuses on the CONTEXT line ("JSON data, line 1:
    {…}", for a NaN that json.dumps writes and PostgreSQL's json refuses) and in a data exception's own message
    ("invalid input syntax for type integer: "…"")."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite takes both values and quotes none in its errors")
    with pytest.raises(DBAPIError) as raised, engine.begin() as connection:
        if refused == "json":
            value = json.dumps({"feature": AUTHOR_EMAIL, "weight": float("nan")})
            connection.execute(text("SELECT CAST(:value AS json)"), {"value": value})
        else:
            connection.execute(text("SELECT CAST(:value AS integer)"), {"value": AUTHOR_EMAIL})
    said = "".join(traceback.format_exception(raised.value))
    assert AUTHOR_EMAIL not in said, said
    assert raised.value.orig.diag.sqlstate.startswith("22")  # type: ignore[union-attr]


def test_the_migrations_engines_hide_parameters_too(tmp_path: Path) -> None:
    """``moderation migrate`` and its schema checks make engines of their own, not with create_db_engine.
    Their errors' DETAIL lines are hidden as well (a unique index built over rows that break it quotes them)."""
    url = f"sqlite:///{tmp_path / 'moderation.db'}"
    hidden: list[bool] = []

    def record(connection: Connection) -> None:
        hidden.append(connection.engine.hide_parameters)
        hidden.append(event.contains(connection.engine, "handle_error", db.hide_row_values))

    event.listen(Engine, "engine_connect", record)
    try:
        upgrade_database(url)
        schema_revision(url)
        missing_from_schema(url)
    finally:
        event.remove(Engine, "engine_connect", record)
    assert len(hidden) >= 3 and all(hidden), hidden
