"""The schema's migrations on both databases: each new revision up from the one before, with rows that an
older schema wrote, and back down. (Older revisions' tests sit with the feature that needed them.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, create_engine, event, inspect, text

from models.db import create_db_engine, make_session_factory
from models.migrate import downgrade_database, upgrade_database
from moderation.privacy import apply_retention
from tests.support.migrations import column_names, drift_from_the_models, store_an_old_comment


def test_every_revision_goes_down_to_nothing_and_up_again_to_the_models(empty_database_url: str) -> None:
    upgrade_database(empty_database_url)
    downgrade_database(empty_database_url, "base")
    engine = create_engine(empty_database_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    upgrade_database(empty_database_url)
    assert drift_from_the_models(empty_database_url) == []


OLD_DECISIONS = {  # a decision as each schema before the revision wrote it
    "0006": "INSERT INTO decisions (comment_id, outcome, is_current, reasons, explanation, decided_by, created_at)"
    " SELECT id, 'hold', true, '[]', '{}', 'model', CURRENT_TIMESTAMP FROM comments",
    "0009": "INSERT INTO decisions (comment_id, outcome, is_current, reasons, explanation, signals, decided_by,"
    " created_at) SELECT id, 'hold', true, '[]', '{}', '{}', 'model', CURRENT_TIMESTAMP FROM comments",
}


@pytest.mark.parametrize(("before", "added"), [("0006", "signals"), ("0009", "thresholds")], ids=["0007", "0010"])
def test_a_record_added_to_decisions_starts_empty_on_older_ones_and_goes_on_the_way_down(
    empty_database_url: str, before: str, added: str
) -> None:
    """What the policy counted (0007) and the lines it drew (0010) are not known for decisions made before."""
    url = empty_database_url
    upgrade_database(url, before)
    engine = create_engine(url)
    with engine.begin() as connection:
        store_an_old_comment(connection)
        connection.execute(text(OLD_DECISIONS[before]))
    upgrade_database(url)
    assert drift_from_the_models(url) == []
    with engine.connect() as connection:
        stored = connection.scalar(sa.select(sa.column(added)).select_from(sa.table("decisions")))
    assert (json.loads(stored) if isinstance(stored, str) else stored) == {}  # drivers differ: text or decoded
    engine.dispose()
    downgrade_database(url, before)
    assert added not in column_names(url, "decisions")
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT outcome FROM decisions")) == "hold"
    engine.dispose()


def test_every_foreign_key_leads_an_index(empty_database_url: str) -> None:
    """Deleting a referenced row (a comment, its decisions, a moderator) looks up the rows pointing at it: without
    an index, a full scan of the referring table for each row deleted."""
    upgrade_database(empty_database_url)
    engine = create_engine(empty_database_url)
    schema = inspect(engine)
    unindexed = []
    for table in schema.get_table_names():
        leading: list[tuple[str | None, ...]] = [tuple(index["column_names"]) for index in schema.get_indexes(table)]
        leading += [tuple(constraint["column_names"]) for constraint in schema.get_unique_constraints(table)]
        leading.append(tuple(schema.get_pk_constraint(table)["constrained_columns"]))
        for key in schema.get_foreign_keys(table):
            columns = tuple(key["constrained_columns"])
            if not any(index[: len(columns)] == columns for index in leading):
                unindexed.append((table, columns))
    engine.dispose()
    assert unindexed == []


INDEXES_0008 = {
    "webhook_receipts": "ix_webhook_receipts_comment_id",
    "moderation_actions": "ix_moderation_actions_before_decision_id",
    "list_entries": "ix_list_entries_created_by",
    "training_labels": "ix_training_labels_moderator_id",
}


def _index_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        schema = inspect(engine)
        return {str(index["name"]) for table in INDEXES_0008 for index in schema.get_indexes(table)}
    finally:
        engine.dispose()


def test_migration_0008_indexes_go_up_down_and_up_again_with_rows_in_every_table(empty_database_url: str) -> None:
    url = empty_database_url
    upgrade_database(url, "0007")
    engine = create_engine(url)
    with engine.begin() as connection:  # a row in each table 0008 indexes, pointing where its index points
        store_an_old_comment(connection)
        for statement in (
            "INSERT INTO webhook_receipts (site_id, webhook_id, comment_id, received_at)"
            " SELECT site_id, 'msg_1', id, CURRENT_TIMESTAMP FROM comments",
            "INSERT INTO decisions (comment_id, outcome, is_current, reasons, explanation, decided_by, created_at)"
            " SELECT id, 'approve', true, '[]', '{}', 'model', CURRENT_TIMESTAMP FROM comments",
            "INSERT INTO moderators (email, password_hash, role, is_active, created_at, session_token)"
            " VALUES ('m@example.org', 'x', 'admin', true, CURRENT_TIMESTAMP, 't')",
            "INSERT INTO moderation_actions (comment_id, moderator_id, action, before_status, after_status,"
            " before_decision_id, after_decision_id, created_at) SELECT c.id, m.id, 'undo', 'approved', 'approved',"
            " d.id, d.id, CURRENT_TIMESTAMP FROM comments c, moderators m, decisions d",
            "INSERT INTO list_entries (list_kind, field, value, created_by, created_at)"
            " SELECT 'block', 'word', 'casino', id, CURRENT_TIMESTAMP FROM moderators",
            "INSERT INTO training_labels (comment_id, body, spam, source, moderator_id, created_at)"
            " SELECT c.id, 'b', true, 'moderator', m.id, CURRENT_TIMESTAMP FROM comments c, moderators m",
        ):
            connection.execute(text(statement))
    engine.dispose()
    expected = {*INDEXES_0008.values(), "ix_moderation_actions_after_decision_id"}
    assert not expected & _index_names(url)
    upgrade_database(url, "0008")
    assert expected <= _index_names(url)
    downgrade_database(url, "0007")
    assert not expected & _index_names(url)
    upgrade_database(url)
    assert expected <= _index_names(url) and drift_from_the_models(url) == []
    engine = create_engine(url)
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT after_decision_id FROM moderation_actions")) is not None
        assert connection.scalar(text("SELECT count(*) FROM training_labels")) == 1
    engine.dispose()


def test_migration_0008_finishes_after_a_run_that_stopped_half_way(empty_database_url: str) -> None:
    """SQLite commits each index by itself and a concurrent PostgreSQL build commits as it goes: a run that
    failed (a locked database) leaves some of the indexes behind, and the next `moderation migrate` goes on."""
    url = empty_database_url
    upgrade_database(url, "0007")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE INDEX ix_list_entries_created_by ON list_entries (created_by)"))
    engine.dispose()
    upgrade_database(url)
    assert drift_from_the_models(url) == []
    engine = create_engine(url)
    with engine.begin() as connection:  # and a downgrade that stopped half-way, likewise
        connection.execute(text("DROP INDEX ix_training_labels_moderator_id"))
    engine.dispose()
    downgrade_database(url, "0007")
    assert not set(INDEXES_0008.values()) & _index_names(url)


def test_migration_0009_starts_waiting_work_with_no_tries_counted(empty_database_url: str) -> None:
    url = empty_database_url
    upgrade_database(url, "0008")
    engine = create_engine(url)
    with engine.begin() as connection:  # work the relay had published twice before the upgrade
        store_an_old_comment(connection)
        connection.execute(
            text(
                "INSERT INTO outbox (kind, comment_id, created_at, published_at, attempts)"
                " SELECT 'classify', id, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 2 FROM comments"
            )
        )
    upgrade_database(url)
    assert drift_from_the_models(url) == []
    with engine.connect() as connection:
        assert connection.execute(text("SELECT attempts, tries, counted_attempt FROM outbox")).one() == (2, 0, 0)
    engine.dispose()
    downgrade_database(url, "0008")
    assert not {"tries", "counted_attempt"} & column_names(url, "outbox")
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT attempts FROM outbox")) == 2
    engine.dispose()


def add_classify_work(connection: sa.Connection, attempts: int) -> None:
    connection.execute(
        text(
            "INSERT INTO outbox (kind, comment_id, created_at, attempts, tries, counted_attempt)"
            " SELECT 'classify', id, CURRENT_TIMESTAMP, :attempts, 0, 0 FROM comments"
        ),
        {"attempts": attempts},
    )


def test_migration_0011_keeps_one_classify_row_per_comment_and_then_refuses_a_second(empty_database_url: str) -> None:
    url = empty_database_url
    upgrade_database(url, "0010")
    engine = create_engine(url)
    with engine.begin() as connection:  # doubled work, as no writer should leave it
        store_an_old_comment(connection)
        add_classify_work(connection, attempts=3)
        add_classify_work(connection, attempts=0)
    upgrade_database(url)
    assert drift_from_the_models(url) == []
    with engine.connect() as connection:  # the oldest stays, with the relay's publishes
        assert connection.execute(text("SELECT kind, attempts FROM outbox")).all() == [("classify", 3)]
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        add_classify_work(connection, attempts=0)
    engine.dispose()
    downgrade_database(url, "0010")
    with engine.begin() as connection:
        add_classify_work(connection, attempts=0)
        assert connection.scalar(text("SELECT count(*) FROM outbox")) == 2
    engine.dispose()


def test_migration_0012_spells_old_author_ips_as_intake_does_and_keeps_their_network(empty_database_url: str) -> None:
    url = empty_database_url
    upgrade_database(url, "0011")
    engine = create_engine(url)
    given = ["::FFFF:192.0.2.7", "2001:DB8:0:0:1:0:0:5", "198.51.100.4", "not an address", None]
    with engine.begin() as connection:
        store_an_old_comment(connection)
        for n, address in enumerate(given):
            connection.execute(
                text(
                    "INSERT INTO comments (site_id, external_id, article_id, body, body_fingerprint, received_at,"
                    " status, author_ip) SELECT id, :external_id, 'a', 'b', 'f', CURRENT_TIMESTAMP, 'approved', :ip"
                    " FROM sites"
                ),
                {"external_id": f"ip-{n}", "ip": address},
            )
    upgrade_database(url)
    assert drift_from_the_models(url) == []
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT author_ip, author_network FROM comments WHERE external_id LIKE 'ip-%' ORDER BY external_id")
        ).all()
    assert [tuple(row) for row in stored] == [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8::1:0:0:5", "2001:db8::/64"),
        ("198.51.100.4", "198.51.100.4"),
        ("not an address", "not an address"),
        (None, None),
    ]
    engine.dispose()
    downgrade_database(url, "0011")
    assert "author_network" not in column_names(url, "comments")


def test_migration_0012_does_not_undo_an_erasure_an_older_process_commits_while_it_fills(
    empty_database_url: str,
) -> None:
    """Migrations run while the version before still serves: its erasure, landing between the fill's read of
    an address and its write, must not get the address (and a network) back."""
    url = empty_database_url
    upgrade_database(url, "0011")
    engine, older_process = create_engine(url), create_engine(url)
    with engine.begin() as connection:
        store_an_old_comment(connection)
        connection.execute(text("UPDATE comments SET author_ip = '198.51.100.7', author_email = 'a@example.org'"))
    erased: list[bool] = []

    def erase_before_the_write(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not erased and statement.lstrip().upper().startswith("UPDATE COMMENTS SET AUTHOR_IP"):
            erased.append(True)
            with older_process.begin() as connection:  # as 0011's erasure writes it
                connection.execute(text("UPDATE comments SET author_ip = NULL, author_email = NULL"))

    event.listen(Engine, "before_cursor_execute", erase_before_the_write)
    try:
        upgrade_database(url)
    finally:
        event.remove(Engine, "before_cursor_execute", erase_before_the_write)
    assert erased
    with engine.connect() as connection:
        assert connection.execute(text("SELECT author_ip, author_network FROM comments")).one() == (None, None)
    engine.dispose()
    older_process.dispose()


def store_old_comments(connection: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Comments as the schema before 0013 holds them (no search columns), on the site of store_an_old_comment."""
    connection.execute(
        text(
            "INSERT INTO comments (site_id, external_id, article_id, article_title, author_name, author_email,"
            " author_url, body, body_fingerprint, received_at, status) SELECT id, :external_id, :article_id,"
            " :article_title, :author_name, :author_email, :author_url, :body, 'f', CURRENT_TIMESTAMP, 'approved'"
            " FROM sites"
        ),
        rows,
    )


def search_columns_of(connection: sa.Connection) -> dict[str, tuple[Any, ...]]:
    query = "SELECT external_id, search_text, search_author, search_article FROM comments"
    return {row[0]: tuple(row[1:]) for row in connection.execute(text(query))}


def test_migration_0013_fills_the_search_columns_of_old_comments_as_intake_now_does(empty_database_url: str) -> None:
    url = empty_database_url
    upgrade_database(url, "0012")
    engine = create_engine(url)
    dressed = {
        "external_id": "dressed",
        "article_id": "Rücken",
        "article_title": "ＥＣＯＬＥ \u00adDos",
        "author_name": "Jo\u200bhn",
        "author_email": "JOHN@Straße.example",
        "author_url": None,
        "body": "V\u200ei\ufe0fa\U000e0067gra \u00c9COLE",
    }
    anonymous = {**dressed, "external_id": "anonymous", "author_name": None, "author_email": None, "body": "Hi"}
    with engine.begin() as connection:
        store_an_old_comment(connection)
        store_old_comments(connection, [dressed, anonymous])
    upgrade_database(url)
    assert drift_from_the_models(url) == []
    with engine.connect() as connection:
        assert search_columns_of(connection) == {
            "c-1": ("b", None, "a\u2063"),
            "dressed": ("viagra école", "john\u2063john@strasse.example\u2063", "rücken\u2063ecole dos"),
            "anonymous": ("hi", None, "rücken\u2063ecole dos"),
        }
    engine.dispose()
    downgrade_database(url, "0012")
    assert not {"search_text", "search_author", "search_article"} & column_names(url, "comments")


def test_migration_0013_commits_batch_by_batch_and_an_erasure_while_it_fills_is_not_undone(
    empty_database_url: str,
) -> None:
    """Migrations run while the version before still serves: the fill must not hold the whole table (SQLite's
    one writer) for its length, and what such a process erases while it runs must not come back in the copy."""
    url = empty_database_url
    upgrade_database(url, "0012")
    engine, older_process = create_engine(url), create_engine(url, connect_args=_no_waiting(url))
    many = [
        {
            "external_id": f"n-{n:05}",
            "article_id": "a",
            "article_title": None,
            "author_name": f"Author {n}",
            "author_email": f"a{n}@example.org",
            "author_url": None,
            "body": f"Comment number {n}",
        }
        for n in range(2500)
    ]
    with engine.begin() as connection:
        store_an_old_comment(connection)
        store_old_comments(connection, many)
    batches: list[str] = []

    def erase_between_batches(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.lstrip().upper().startswith("BEGIN"):
            return
        batches.append(statement)
        if len(batches) == 2:  # the first batch is committed; the older process writes before the second starts
            with older_process.begin() as connection:  # as 0012's erasure of a deleted comment writes it
                connection.execute(
                    text(
                        "UPDATE comments SET author_name = NULL, author_email = NULL, body = '' WHERE external_id IN"
                        " ('n-00001', 'n-02400')"
                    )
                )

    event.listen(Engine, "before_cursor_execute", erase_between_batches)
    try:
        upgrade_database(url)
    finally:
        event.remove(Engine, "before_cursor_execute", erase_between_batches)
    assert len(batches) >= 3
    with engine.connect() as connection:
        stored = search_columns_of(connection)
    assert stored["n-00000"] == ("comment number 0", "author 0\u2063a0@example.org\u2063", "a\u2063")
    assert stored["n-02400"] == ("", None, "a\u2063")  # erased before its batch was read
    assert all(text is not None for text, _, _ in stored.values())
    # Erased after its batch was filled: the copies still name the author, until retention mends them.
    assert stored["n-00001"][:2] == ("comment number 1", "author 1\u2063a1@example.org\u2063")
    service = create_db_engine(url)
    done = apply_retention(make_session_factory(service), datetime.now(UTC), 0, 0)
    service.dispose()
    with engine.connect() as connection:
        assert (done.search_mended, search_columns_of(connection)["n-00001"]) == (1, ("", None, "a\u2063"))
    engine.dispose()
    older_process.dispose()


def _no_waiting(url: str) -> dict[str, Any]:
    """An older process's connection that fails at once, rather than waiting, if the fill holds the database."""
    return {"timeout": 0} if url.startswith("sqlite") else {"options": "-c lock_timeout=100"}
