"""The schema's migrations on both databases: each new revision up from the one before, with rows that an
older schema wrote, and back down. (Older revisions' tests sit with the feature that needed them.)"""

from __future__ import annotations

import json

from sqlalchemy import create_engine, inspect, text

from models.migrate import downgrade_database, upgrade_database
from tests.support.migrations import column_names, drift_from_the_models, store_an_old_comment


def test_every_revision_goes_down_to_nothing_and_up_again_to_the_models(empty_database_url: str) -> None:
    upgrade_database(empty_database_url)
    downgrade_database(empty_database_url, "base")
    engine = create_engine(empty_database_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    upgrade_database(empty_database_url)
    assert drift_from_the_models(empty_database_url) == []


def test_migration_0007_gives_older_decisions_an_empty_record_of_signals(empty_database_url: str) -> None:
    url = empty_database_url
    upgrade_database(url, "0006")
    engine = create_engine(url)
    with engine.begin() as connection:  # a decision written before 0007
        store_an_old_comment(connection)
        connection.execute(
            text(
                "INSERT INTO decisions (comment_id, outcome, is_current, reasons, explanation, decided_by, created_at)"
                " SELECT id, 'approve', true, '[]', '{}', 'model', CURRENT_TIMESTAMP FROM comments"
            )
        )
    upgrade_database(url, "0007")
    assert drift_from_the_models(url) == []
    with engine.connect() as connection:
        stored = connection.scalar(text("SELECT signals FROM decisions"))
    assert (json.loads(stored) if isinstance(stored, str) else stored) == {}  # drivers differ: text or decoded
    engine.dispose()
    downgrade_database(url, "0006")
    assert "signals" not in column_names(url, "decisions")
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT outcome FROM decisions")) == "approve"
    engine.dispose()
