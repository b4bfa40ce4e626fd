"""Run the Alembic migrations programmatically, so no alembic.ini is needed at run time."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine, inspect

from models.db import without_row_values

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Percent signs in passwords would otherwise be read as interpolation by configparser.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_database(database_url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``; one already past this code's migrations is left as it is."""
    if revision == "head" and is_ahead(schema_revision(database_url)) and not missing_from_schema(database_url):
        # A later version migrated it (a rolling upgrade, or this version started again after a rollback):
        # Alembic cannot go "up" from a revision it does not know, and the migrations only add.
        return
    command.upgrade(alembic_config(database_url), revision)


def downgrade_database(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def schema_revision(database_url: str) -> str | None:
    """The migration the database's schema is at; None for a database without the service's schema."""
    # As create_db_engine's: no values in errors.
    engine = without_row_values(create_engine(database_url, hide_parameters=True))
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    """The migration this code's schema is at: the one ``upgrade_database`` brings a database to."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:  # only if the migrations folder were empty
        raise RuntimeError(f"no migrations in {MIGRATIONS_DIR}")
    return head


def schema_mismatch(current: str | None) -> str | None:
    """Why a database at migration ``current`` cannot be used by this code as it is; None when it can.

    Only a schema behind this code is a problem. One ahead of it is what a rolling upgrade looks like: the
    migrations run first while the previous version's processes still serve, and they keep working because
    this project's migrations only add (tables, columns, indexes).
    """
    head = head_revision()
    if current is None or current == head or is_ahead(current):
        return None
    return (
        f"the database schema is at {current} and this code needs {head}: take a backup, then run `moderation migrate`"
    )


def missing_from_schema(database_url: str) -> list[str]:
    """The tables and columns of this code's models that the database does not have: none, for a schema a
    later version of this service migrated (its migrations only add); some, for one that is something else."""
    import models.entities  # noqa: F401  (every model registered on the metadata)
    from models.base import Base

    # As create_db_engine's: no values in errors.
    engine = without_row_values(create_engine(database_url, hide_parameters=True))
    try:
        inspector = inspect(engine)
        tables = set(inspector.get_table_names())
        missing = []
        for table in Base.metadata.sorted_tables:
            if table.name not in tables:
                missing.append(table.name)
                continue
            present = {column["name"] for column in inspector.get_columns(table.name)}
            missing += [f"{table.name}.{column.name}" for column in table.columns if column.name not in present]
        return missing
    finally:
        engine.dispose()


def is_ahead(current: str | None) -> bool:
    """Whether a database at migration ``current`` was migrated by a later version of this code."""
    return current is not None and not _known(current)


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(revision) is not None
    except CommandError:
        return False
