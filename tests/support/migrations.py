"""Migrations tried on both databases: an empty database of either kind, and what its schema looks like."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, create_engine, inspect, text

from models.base import Base
from tests.support.services import fresh_postgres_database, postgres_reachable


@contextmanager
def empty_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a new database without any schema: a SQLite file, or a PostgreSQL database dropped after."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with fresh_postgres_database() as url:
        yield url


def drift_from_the_models(url: str) -> list[Any]:
    """What the schema lacks or has beyond the ORM models; [] when a migration made exactly the models."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))
    finally:
        engine.dispose()


def column_names(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {column["name"] for column in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def store_an_old_comment(connection: Connection) -> None:
    """A site and one approved comment, written with plain SQL as an older schema holds them."""
    connection.execute(text("INSERT INTO sites (name, created_at) VALUES ('s', CURRENT_TIMESTAMP)"))
    connection.execute(
        text(
            "INSERT INTO comments (site_id, external_id, article_id, body, body_fingerprint, created_at,"
            " received_at, status) SELECT id, 'c-1', 'a', 'b', 'f', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP,"
            " 'approved' FROM sites"
        )
    )
