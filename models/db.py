"""Engines and session factories for SQLite (WAL) and PostgreSQL."""

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import Dialect, ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

SQLITE_LOCK_WAIT_SECONDS = 30.0


def create_db_engine(url: str, *, pool_size: int = 5, echo: bool = False) -> Engine:
    """An engine tuned for the backend: WAL and a busy timeout on SQLite, a checked pool on PostgreSQL.

    Its errors name the statement but not the values bound to it (``hide_parameters``), nor those PostgreSQL
    quotes from the row that broke a constraint (``hide_row_values``), as every engine the service makes: an
    error's text is logged (an unhandled one with its traceback), and the values are a comment's text, its
    author's e-mail and IP.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # How long a statement waits for another process's write lock: 30 s, or the URL's ``?timeout=``.
        wait = float(str(parsed.query.get("timeout", SQLITE_LOCK_WAIT_SECONDS)))
        engine = create_engine(url, echo=echo, hide_parameters=True, connect_args={"timeout": wait})
        event.listen(engine, "connect", _sqlite_configurer(busy_ms=round(wait * 1000)))
        event.listen(engine, "begin", _begin_immediate)
        return without_row_values(engine)
    engine = create_engine(
        url, echo=echo, hide_parameters=True, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800
    )
    without_row_values(engine)
    event.listen(engine, "connect", _mark_idle)
    event.listen(engine, "checkin", _mark_idle)
    event.listen(engine, "checkout", _pinger(engine.dialect))
    return engine


# What an error's DETAIL says instead of PostgreSQL's own, which quotes the values of the row that broke a
# constraint: "Key (list_kind, field, value, site_id)=(block, author, ana@example.org, 1) already exists.", "Failing
# row contains (…, ana@example.org, 198.51.100.7, …)." (over several lines, if a value has them).
HIDDEN_DETAIL = "(hidden: it can quote the row's values)"
# Nor its CONTEXT ("JSON data, line 1: {…}" quotes a refused value), nor the message of a data exception
# (SQLSTATE class 22: "invalid input syntax for type integer: "…"").
HIDDEN_CONTEXT = "(hidden: it can quote a value)"
DATA_EXCEPTION_CLASS = "22"


def without_row_values(engine: Engine) -> Engine:
    """``engine`` with ``hide_row_values`` on its errors; every engine the service makes has it (the
    migrations' too), as it has ``hide_parameters``."""
    event.listen(engine, "handle_error", hide_row_values)
    return engine


def hide_row_values(context: ExceptionContext) -> None:
    """Replace the DETAIL and CONTEXT of a PostgreSQL error (and a data exception's message), in the driver's
    error and in SQLAlchemy's around it, before they are raised: ``hide_parameters`` keeps the values bound to
    a statement out of its error, but not those the server quotes back, and an error's text is logged, printed
    by the command line and shown on the pages. The primary message still names the constraint (and
    SQLAlchemy's the statement); code that needs the detail reads ``error.orig.diag``, which keeps it.
    SQLite's messages quote no values."""
    original = context.original_exception
    diag = getattr(original, "diag", None)
    if diag is None:
        return
    quoting = [(diag.message_detail, HIDDEN_DETAIL), (diag.context, HIDDEN_CONTEXT)]
    if (diag.sqlstate or "").startswith(DATA_EXCEPTION_CLASS):  # "invalid input syntax for type integer: "…""
        quoting.append((diag.message_primary, f"data exception {diag.sqlstate} (its message can quote a value)"))
    for error in (original, context.sqlalchemy_exception):
        if error is None or not error.args or not isinstance(error.args[0], str):
            continue
        text = error.args[0]
        for said, hidden in quoting:
            if said:
                text = text.replace(said, hidden)
        error.args = (text, *error.args[1:])


def flush_unless_taken(session: Session, taken: Exception) -> None:
    """Flush the new rows; if a unique constraint refuses one (another transaction added it since the caller
    looked for it, and committed first), raise ``taken``, the caller's own refusal, in place of the database's
    error (its statement, and the detail PostgreSQL quotes the values in). The caller rolls back, as after any
    of its refusals."""
    try:
        session.flush()
    except IntegrityError:
        raise taken from None


# Pessimistic disconnect handling, but only for connections that sat idle: one used a moment ago was
# alive then, and pinging it before every transaction (pool_pre_ping) was a round trip per transaction
# for every webhook and every task. After a server that died within this window, each process fails at most
# one statement per connection in use; SQLAlchemy then replaces the pool's connections (a webhook answers
# 503 and the site retries; classify and notify tasks retry).
PING_AFTER_IDLE_SECONDS = 2.0


def _mark_idle(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _pinger(dialect: Dialect) -> Callable[[Any, Any, Any], None]:
    def ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            # The server went away: the pool discards this connection and every other one it made before
            # now (as pool_pre_ping does), and checks out a fresh one.
            raise InvalidatePoolError(f"stale connection: {error}") from error

    return ping_if_idle


def _sqlite_configurer(busy_ms: int) -> Callable[[Any, Any], None]:
    def configure(dbapi_connection: Any, _record: Any) -> None:
        _configure_sqlite(dbapi_connection, busy_ms)

    return configure


def _configure_sqlite(dbapi_connection: Any, busy_ms: int) -> None:
    # WAL lets the web process read while a worker writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={busy_ms:d}")
    cursor.close()
    # SQLite's own lower() folds only ASCII, so a search for "массаж" never matched "Массаж"; Python's folds
    # every script, as PostgreSQL's does. Deterministic, as the built-in is, so queries are planned the same.
    dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)
    # pysqlite would start a transaction only at the first INSERT/UPDATE, so a "SELECT ... FOR UPDATE"
    # (a plain SELECT on SQLite) would read without any lock. Turn its own BEGIN off; _begin_immediate
    # emits ours (SQLAlchemy's documented pysqlite recipe for serializable transactions).
    dbapi_connection.isolation_level = None


def _unicode_lower(value: Any) -> Any:
    """SQL lower() for every script: text lower-cased as Python does it, NULL kept, other values as text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").lower()
    return str(value).lower()


# Execution option naming how a SQLite transaction begins; "DEFERRED" suits long read-only work (an export).
SQLITE_BEGIN = "sqlite_begin"


def _begin_immediate(connection: Connection) -> None:
    # IMMEDIATE takes the database's write lock at the start, so a transaction's reads are serialized with
    # every other writer: what the row locks (with_for_update) give on PostgreSQL. It also makes read-only
    # transactions wait their turn; long read-only work opts into DEFERRED (a WAL snapshot, no lock).
    mode = connection.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
    if mode not in {"IMMEDIATE", "DEFERRED"}:
        raise ValueError(f"{SQLITE_BEGIN} must be IMMEDIATE or DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def close_at_teardown(session: Session) -> None:
    """Close a request's session once its answer is decided. What it committed stays committed; what is
    left is a rollback, and on a connection the database dropped meanwhile (a restart) that fails. Such a
    failure must not turn the answer into an error page. SQLAlchemy has invalidated a dropped connection
    already (the pool opens a new one in its place); nothing here may open one (the database may be gone)."""
    try:
        session.close()
    except DBAPIError as error:
        log.warning("closing a request's database session failed: %s", error.orig)
