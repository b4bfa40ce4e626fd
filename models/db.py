"""Engines and session factories for SQLite (WAL) and PostgreSQL."""

from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def create_db_engine(url: str, *, pool_size: int = 5, echo: bool = False) -> Engine:
    """An engine tuned for the backend: WAL and a busy timeout on SQLite, a checked pool on PostgreSQL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30})
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate)
        return engine
    return create_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_recycle=1800
    )


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the web process read while a worker writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
    # pysqlite would start a transaction only at the first INSERT/UPDATE, so a "SELECT ... FOR UPDATE"
    # (a plain SELECT on SQLite) would read without any lock. Turn its own BEGIN off; _begin_immediate
    # emits ours (SQLAlchemy's documented pysqlite recipe for serializable transactions).
    dbapi_connection.isolation_level = None


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
