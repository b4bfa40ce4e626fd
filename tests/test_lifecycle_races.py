"""Races between edits, deletions, erasures, workers and callbacks: two real sessions in two threads.

Each test pauses one use case right after its locking read and runs the other use case in a second thread
on its own session. Where the locking works, the second one waits for the first to commit; the final rows
must be what the two would give one after the other, on SQLite and on PostgreSQL. On PostgreSQL the wait
is seen (the second session's server process waiting for a lock); on SQLite it is inferred from the second
use case not finishing within a head start.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from models.db import make_session_factory
from models.entities import Site
from moderation import callbacks, decisions, lifecycle
from moderation.lifecycle import apply_delete, apply_update
from moderation.lists import add_entry
from moderation.privacy import erase_author
from moderation.sites import get_site
from tests.conftest import TrainedModel
from tests.test_lifecycle import (
    ADVICE,
    ORDINARY,
    SITE,
    comment_row,
    created,
    decide,
    decisions_of,
    deliveries_of,
    outbox_rows,
    secret,
    send,
    updated,
)
from tests.test_privacy import personal_values_left
from webhooks.schemas import CommentEvent

__all__ = ["secret"]  # the fixture, shared with test_lifecycle

AUTHOR_NAME, AUTHOR_EMAIL = "Jan", "jan@example.org"  # the author tests.support.signing puts in every event
# SQLite shows no one waiting for its lock: there the paused use case gives the other one this long to
# overtake it. PostgreSQL shows the lock wait itself (pg_stat_activity), so there the test sees it.
HEAD_START = 1.0
LOCK_WAIT_LIMIT = 30.0  # PostgreSQL: seconds for the racer to either finish or be seen waiting for a lock


class Racer:
    """Runs ``work`` in a thread with its own session; tells whether it got through while the paused
    session was open, or was blocked by it."""

    def __init__(self, engine: Engine, work: Callable[[Any], Any]) -> None:
        self.engine = engine
        self.sessions = make_session_factory(engine)
        self.work = work
        self.done = threading.Event()
        self.backend_pid: int | None = None  # PostgreSQL: the racer's server process, to see it wait
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def on_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def _run(self) -> None:
        try:
            with self.sessions.begin() as session:
                if self.on_postgresql:
                    self.backend_pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
                self.work(session)
        except BaseException as error:  # reported by finish()
            self.errors.append(error)
        finally:
            self.done.set()

    def start_and_wait(self) -> bool:
        """Start; True when it got through while the other session was still open (nothing blocked it),
        False when it was blocked: seen waiting for a lock on PostgreSQL, not done within the head start on
        SQLite."""
        self.thread.start()
        if not self.on_postgresql:
            return self.done.wait(HEAD_START)
        deadline = time.monotonic() + LOCK_WAIT_LIMIT
        while not self.done.wait(0.02):
            if self._waits_for_a_lock():
                return False
            assert time.monotonic() < deadline, "the racer neither finished nor waited for a lock"
        return True

    def _waits_for_a_lock(self) -> bool:
        if self.backend_pid is None:
            return False
        with self.engine.connect() as connection:
            waiting = connection.execute(
                text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": self.backend_pid}
            ).scalar_one_or_none()
        return waiting == "Lock"

    def finish(self) -> None:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the racing session never finished"
        assert not self.errors, self.errors


@contextmanager
def paused_after(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, racer: Racer) -> Iterator[list[bool]]:
    """Patch ``module.name`` so that right after it returns, ``racer`` runs; yields [overtook?]."""
    original = getattr(module, name)
    overtook: list[bool] = []
    started = threading.Event()

    def paused(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if not started.is_set():  # only the first call races; the racer's own call goes straight through
            started.set()
            overtook.append(racer.start_and_wait())
        return result

    monkeypatch.setattr(module, name, paused)
    yield overtook
    monkeypatch.setattr(module, name, original)
    racer.finish()


def event_of(payload: dict[str, Any]) -> Any:
    return CommentEvent.model_validate_json(json.dumps(payload)).root


def now() -> datetime:
    return datetime.now(UTC)


def the_site(session: Session) -> Site:
    site = get_site(session, SITE)
    assert site is not None
    return site


def test_a_delete_during_an_edit_waits_and_stays_final(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review #1: on SQLite the edit's "locked" read took no lock; the delete committed in between and the
    edit, acting on what it had read, brought the comment back to pending with a new outbox row."""
    comment_id = send(client, secret, created("c-r1", body=ADVICE)).get_json()["id"]
    assert decide(engine, active_model.model, comment_id) is not None
    edit = event_of(updated("c-r1", ORDINARY, "2026-11-26T11:00:00Z")).data.as_new_comment()

    def delete(session: Any) -> None:
        site = the_site(session)
        apply_delete(session, site, "msg_race_delete", "c-r1", now(), now())

    with (
        paused_after(monkeypatch, lifecycle, "locked_comment", Racer(engine, delete)) as overtook,
        make_session_factory(engine).begin() as session,
    ):
        apply_update(session, the_site(session), "msg_race_edit", edit, now())

    assert overtook == [False], "the delete did not wait for the edit's lock"
    row = comment_row(engine, comment_id)
    assert row.status == "deleted" and row.deleted_at is not None
    assert outbox_rows(engine, comment_id) == 0


def test_an_edit_during_a_deletes_lock_changes_nothing(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    comment_id = send(client, secret, created("c-r2", body=ADVICE)).get_json()["id"]
    assert decide(engine, active_model.model, comment_id) is not None
    edit = event_of(updated("c-r2", ORDINARY, "2026-11-26T11:00:00Z")).data.as_new_comment()

    def edit_it(session: Any) -> None:
        apply_update(session, the_site(session), "msg_race_edit", edit, now() + timedelta(seconds=1))

    with (
        paused_after(monkeypatch, lifecycle, "locked_comment", Racer(engine, edit_it)) as overtook,
        make_session_factory(engine).begin() as session,
    ):
        apply_delete(session, the_site(session), "msg_race_delete", "c-r2", now(), now())

    assert overtook == [False]
    row = comment_row(engine, comment_id)
    assert row.status == "deleted" and row.body == ADVICE
    assert outbox_rows(engine, comment_id) == 0


def test_a_duplicate_classify_task_waits_for_an_edit_that_reuses_the_outbox_row(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review (stop 11): a moderator settled a comment before the model did, so its outbox row is still
    there; an edit reuses that row without writing to it. A duplicate task that saw the comment settled
    must not delete the row while the edit is in flight: it is the edit's only promise of a decision."""
    comment_id = send(client, secret, created("c-r4")).get_json()["id"]
    with engine.begin() as connection:  # reviewed while still waiting for the model
        connection.execute(text("UPDATE comments SET status = 'approved' WHERE id = :id"), {"id": comment_id})
    assert outbox_rows(engine, comment_id) == 1
    edit = event_of(updated("c-r4", ADVICE, "2026-11-26T11:00:00Z")).data.as_new_comment()

    def duplicate_task(session: Any) -> None:
        decisions.decide_waiting(session, comment_id, active_model.model, now(), batch_size=1)

    with (
        paused_after(monkeypatch, lifecycle, "_ensure_classify_work", Racer(engine, duplicate_task)) as overtook,
        make_session_factory(engine).begin() as session,
    ):
        apply_update(session, the_site(session), "msg_race_edit_4", edit, now())

    assert overtook == [False]  # the task found work left and waited for the comment's lock
    # On PostgreSQL the task then saw the comment pending and left the edit's row to the edit's own task;
    # on SQLite it waited for the whole edit and decided the new text itself. Either way it is decided once.
    decide(engine, active_model.model, comment_id)  # the edit's own task
    assert comment_row(engine, comment_id).status != "pending"
    assert len([d for d in decisions_of(engine, comment_id) if d.is_current]) == 1
    assert outbox_rows(engine, comment_id) == 0


def test_a_duplicate_classify_task_keeps_the_outbox_row_of_an_edit_made_meanwhile(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review #4: a redelivered task found the comment decided and deleted its outbox rows by comment id,
    including the row an edit committed in between (the edit's only guarantee of being classified)."""
    comment_id = send(client, secret, created("c-r3")).get_json()["id"]
    assert decide(engine, active_model.model, comment_id) is not None
    edit = event_of(updated("c-r3", ADVICE, "2026-11-26T11:00:00Z")).data.as_new_comment()

    def edit_it(session: Any) -> None:
        apply_update(session, the_site(session), "msg_race_edit", edit, now())

    with paused_after(monkeypatch, decisions, "_settled_revision", Racer(engine, edit_it)) as overtook:
        assert decide(engine, active_model.model, comment_id) is None  # the duplicate task

    # The look at a settled comment takes no row lock: on PostgreSQL the edit commits between the look and
    # the delete, and the delete, checking the revision it read, leaves the edit's outbox row alone. (A
    # SQLite transaction holds the database's write lock from its start, so there the edit waits.)
    assert overtook == [engine.dialect.name == "postgresql"]

    assert comment_row(engine, comment_id).status == "pending"
    assert outbox_rows(engine, comment_id) == 1
    decided = decide(engine, active_model.model, comment_id)  # the edit's task, relayed from its outbox row
    assert decided is not None and decided.outcome == "hold"


def test_a_callback_cancelled_while_on_the_wire_stays_cancelled(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review #3: the notify task checked CANCELLED without a lock and then wrote DELIVERED or PENDING over a
    cancellation committed in between, so a deleted comment's callback was retried."""
    comment_id = send(client, secret, created("c-r4")).get_json()["id"]
    decided = decide(engine, active_model.model, comment_id)
    assert decided is not None and decided.delivery_id is not None
    policy = callbacks.RetryPolicy()
    with make_session_factory(engine).begin() as session:
        assert callbacks.claim_delivery(session, decided.delivery_id, now(), policy) is not None

    def delete(session: Any) -> None:
        apply_delete(session, the_site(session), "msg_race_delete", "c-r4", now(), now())

    with (
        paused_after(monkeypatch, callbacks, "locked_deliveries", Racer(engine, delete)),
        make_session_factory(engine).begin() as session,
    ):
        callbacks.record_attempt(
            session,
            decided.delivery_id,
            status_code=503,
            delivered=False,
            error="HTTP 503",
            retry_after=None,
            now=now(),
            policy=policy,
        )

    assert [d.status for d in deliveries_of(engine, comment_id)] == ["cancelled"]
    with make_session_factory(engine).begin() as session:
        assert callbacks.due_deliveries(session, now() + timedelta(days=2)) == []


def test_an_erasure_during_a_classification_leaves_no_author_data(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review #2: the worker read the author, the erasure committed, and the worker's claim (revision and
    status only) still stored a decision and a callback carrying the author's e-mail and name."""
    with make_session_factory(engine).begin() as session:
        site_id = the_site(session).id
        add_entry(session, "block", "author", AUTHOR_EMAIL, site_id, None, now())
    comment_id = send(client, secret, created("c-r5")).get_json()["id"]

    def erase(session: Any) -> None:
        erase_author(session, the_site(session), AUTHOR_EMAIL, now())

    with paused_after(monkeypatch, decisions, "comment_text", Racer(engine, erase)):
        decide(engine, active_model.model, comment_id)

    decide(engine, active_model.model, comment_id)  # the anonymized text, classified again if needed
    assert comment_row(engine, comment_id).erased_at is not None
    assert [d.is_current for d in decisions_of(engine, comment_id)] == [True]
    assert personal_values_left(engine, [AUTHOR_EMAIL, AUTHOR_NAME]) == []
