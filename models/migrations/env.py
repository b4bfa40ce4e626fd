"""Alembic environment: the URL comes from the Config the caller builds (models.migrate)."""

from alembic import context
from sqlalchemy import create_engine, pool

from models import entities  # noqa: F401 - registers the tables on Base.metadata
from models.base import Base
from models.db import without_row_values

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    # No values in errors' text (a unique index built over rows that break it quotes them: without_row_values).
    engine = without_row_values(create_engine(url, poolclass=pool.NullPool, hide_parameters=True))
    with engine.connect() as connection:
        # Batch mode lets later migrations alter tables on SQLite too.
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
