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
from moderation import callbacks, decisions, lifecycle, privacy
from moderation.decisions import Decided
from moderation.intake import accept_comment
from moderation.lifecycle import apply_delete, apply_update
from moderation.lists import add_entry
from moderation.privacy import Erasure, erase_author, erase_comments_of_site
from moderation.sites import get_site
from tests.conftest import TrainedModel
from tests.test_lifecycle import (
    ADVICE,
    ORDINARY,
    OTHER_ORDINARY,
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


# --- erasure by the site's comment ids (erase_comments_of_site) ----------------------------------------
# The erasure locks the named comments (privacy._locked_unerased_comments) and takes only those not erased
# yet, as they are once the lock is granted. The final rows must be those of the two use cases one after the
# other, in the order their locks were taken.

AUTHOR_IP, AUTHOR_AGENT = "203.0.113.9", "Mozilla/5.0"  # the rest of that author
AUTHOR_VALUES = [AUTHOR_NAME, AUTHOR_EMAIL, AUTHOR_IP, AUTHOR_AGENT]


def created_without_email(comment_id: str) -> dict[str, Any]:
    """A comment whose author gave no e-mail: the site can only erase it by its own comment id."""
    event = created(comment_id)
    event["data"]["author"] = {key: value for key, value in event["data"]["author"].items() if key != "email"}
    return event


def erase_by_id(session: Session, external_id: str, at: datetime | None = None) -> Erasure:
    return erase_comments_of_site(session, the_site(session), [external_id], at or now())


def author_of(engine: Engine, comment_id: int) -> tuple[Any, ...]:
    row = comment_row(engine, comment_id)
    return (row.author_name, row.author_email, row.author_url, row.author_ip, row.author_user_agent)


def test_an_erasure_by_id_during_a_classification_waits_and_erases_its_decision(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker holds the comment's lock with the author in hand: the erasure waits for its commit, then
    erases the comment and scrubs the decision it stored (its explanation holds words of the name). One
    after the other, the classification first: the comment was decided by then, so the erasure does not
    restart its classification, and its revision stays the one decided."""
    comment_id = send(client, secret, created("c-e1")).get_json()["id"]
    erased: list[Erasure] = []

    def erase(session: Any) -> None:
        erased.append(erase_by_id(session, "c-e1"))

    with paused_after(monkeypatch, decisions, "comment_text", Racer(engine, erase)) as overtook:
        decided = decide(engine, active_model.model, comment_id)

    assert overtook == [False], "the erasure did not wait for the worker's lock"
    assert decided is not None and erased == [Erasure(comments=1, list_entries=0)]
    assert decide(engine, active_model.model, comment_id) is None  # decided, nothing to classify again
    row = comment_row(engine, comment_id)
    assert row.erased_at is not None and row.status != "pending"
    # Read unlocked, the comment was still pending at the revision being classified: the erasure bumped it
    # over a decision already made, and the comment no longer matches the text's revision it was decided at.
    assert row.revision == decided.revision
    assert [d.is_current for d in decisions_of(engine, comment_id)] == [True]
    assert personal_values_left(engine, AUTHOR_VALUES) == []


def test_a_classification_during_an_erasure_by_id_decides_only_the_erased_comment(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order: the erasure holds the lock, so the worker never reads the author. On PostgreSQL it
    skips the locked comment (SKIP LOCKED) and the next task decides the erased one; on SQLite it waits for
    the erasure's transaction and decides it itself. Either way the one decision is of the restarted
    revision, the erased comment's."""
    comment_id = send(client, secret, created("c-e2")).get_json()["id"]
    revision = comment_row(engine, comment_id).revision
    by_the_racer: list[Decided | None] = []

    def classify(session: Any) -> None:
        by_the_racer.append(decisions.decide_comment(session, comment_id, active_model.model, now()))

    with (
        paused_after(monkeypatch, privacy, "_locked_unerased_comments", Racer(engine, classify)) as overtook,
        make_session_factory(engine).begin() as session,
    ):
        assert erase_by_id(session, "c-e2") == Erasure(comments=1, list_entries=0)

    assert overtook == [engine.dialect.name == "postgresql"]
    made = [d for d in [*by_the_racer, decide(engine, active_model.model, comment_id)] if d is not None]
    assert [d.revision for d in made] == [revision + 1], "a decision was made from the author's data"
    row = comment_row(engine, comment_id)
    assert row.erased_at is not None and row.revision == revision + 1
    assert [d.is_current for d in decisions_of(engine, comment_id)] == [True]
    assert personal_values_left(engine, AUTHOR_VALUES) == []


def test_an_erasure_by_id_during_an_edit_waits_and_erases_what_the_edit_stored(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A comment sent without an e-mail, whose edit carries one. The edit locks first: one after the other,
    the edit stores the new text and the author (the comment is not erased yet), then the erasure clears all
    of it and restarts the edit's classification (a worker may hold the e-mail the edit stored)."""
    comment_id = send(client, secret, created_without_email("c-e3")).get_json()["id"]
    assert decide(engine, active_model.model, comment_id) is not None
    before = comment_row(engine, comment_id)
    assert before.author_email is None and before.author_name == AUTHOR_NAME
    edit = event_of(updated("c-e3", ADVICE, "2026-11-26T11:00:00Z")).data.as_new_comment()
    assert edit.author_email == AUTHOR_EMAIL
    erased: list[Erasure] = []

    def erase(session: Any) -> None:
        erased.append(erase_by_id(session, "c-e3"))

    with (
        paused_after(monkeypatch, lifecycle, "locked_comment", Racer(engine, erase)) as overtook,
        make_session_factory(engine).begin() as session,
    ):
        apply_update(session, the_site(session), "msg_race_edit_e3", edit, now())

    assert overtook == [False], "the erasure did not wait for the edit's lock"
    assert erased == [Erasure(comments=1, list_entries=0)]
    # Read unlocked, the erasure saw no e-mail to clear and wrote none: the edit's e-mail stayed.
    assert author_of(engine, comment_id) == (None,) * 5
    row = comment_row(engine, comment_id)
    assert row.erased_at is not None and row.body == ADVICE and row.status == "pending"
    assert row.revision == before.revision + 2  # the edit's revision, then the erasure's restart
    assert outbox_rows(engine, comment_id) == 1
    decided = decide(engine, active_model.model, comment_id)  # the anonymized text, classified again
    assert decided is not None and decided.revision == row.revision
    assert personal_values_left(engine, AUTHOR_VALUES) == []


def test_an_edit_during_an_erasure_by_id_waits_and_stores_nothing_erased_again(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The erasure locks first: one after the other, the comment is erased, then the edit stores its new
    text but not the author it carries (docs/privacy.md: later events for an erased comment do not store the
    author again), e-mail included, which the comment never had."""
    comment_id = send(client, secret, created_without_email("c-e4")).get_json()["id"]
    assert decide(engine, active_model.model, comment_id) is not None
    before = comment_row(engine, comment_id)
    edit = event_of(updated("c-e4", ADVICE, "2026-11-26T11:00:00Z")).data.as_new_comment()
    assert edit.author_email == AUTHOR_EMAIL

    def edit_it(session: Any) -> None:
        apply_update(session, the_site(session), "msg_race_edit_e4", edit, now())

    with (
        paused_after(monkeypatch, privacy, "_locked_unerased_comments", Racer(engine, edit_it)) as overtook,
        make_session_factory(engine).begin() as session,
    ):
        assert erase_by_id(session, "c-e4") == Erasure(comments=1, list_entries=0)

    assert overtook == [False], "the edit did not wait for the erasure's lock"
    assert author_of(engine, comment_id) == (None,) * 5
    row = comment_row(engine, comment_id)
    assert row.erased_at is not None and row.body == ADVICE and row.status == "pending"
    assert row.revision == before.revision + 1  # decided when erased: only the edit makes a new revision
    assert outbox_rows(engine, comment_id) == 1
    decided = decide(engine, active_model.model, comment_id)
    assert decided is not None and decided.revision == row.revision
    assert personal_values_left(engine, AUTHOR_VALUES) == []


def test_two_erasures_by_id_of_one_comment_the_second_waits_and_erases_nothing(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same request twice at once (a retried API call, the command line and the API): the second waits
    for the first, then finds the comment erased: it counts 0, as a repeat does, and changes nothing."""
    comment_id = send(client, secret, created_without_email("c-e5")).get_json()["id"]
    assert decide(engine, active_model.model, comment_id) is not None
    first_at = now()
    again: list[Erasure] = []

    def erase_again(session: Any) -> None:
        again.append(erase_by_id(session, "c-e5", first_at + timedelta(seconds=5)))

    with (
        paused_after(monkeypatch, privacy, "_locked_unerased_comments", Racer(engine, erase_again)) as overtook,
        make_session_factory(engine).begin() as session,
    ):
        assert erase_by_id(session, "c-e5", first_at) == Erasure(comments=1, list_entries=0)

    assert overtook == [False], "the second erasure did not wait for the first one's lock"
    assert again == [Erasure(comments=0, list_entries=0)]
    row = comment_row(engine, comment_id)
    assert row.erased_at == first_at  # the first erasure's, not rewritten by the second
    assert author_of(engine, comment_id) == (None,) * 5
    assert personal_values_left(engine, AUTHOR_VALUES) == []


RACING_DELIVERIES = {
    # what commits between the update's locking read (nothing stored yet) and its insert; the text left stored
    "its older create": (created("c-r9", body=ORDINARY), ADVICE),
    "an older update": (updated("c-r9", OTHER_ORDINARY, "2026-11-26T10:30:00Z"), ADVICE),
    "a newer update": (updated("c-r9", OTHER_ORDINARY, "2026-11-26T12:00:00Z"), OTHER_ORDINARY),
}


@pytest.mark.parametrize("racing", list(RACING_DELIVERIES))
def test_an_update_that_finds_nothing_stored_is_applied_to_what_another_delivery_stores_meanwhile(
    racing: str, client: FlaskClient, secret: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: the update found no comment and stored it through the create's path, which then found the row
    another web process had just committed and answered the update 200 as its repeat: the edit's text was never
    stored, and the site, told it was, never sent it again. The newer version wins, whatever the order."""
    racer_payload, left = RACING_DELIVERIES[racing]
    racer_event = event_of(racer_payload)

    def deliver(session: Any) -> None:
        new = racer_event.data.as_new_comment()
        if racer_event.type == "comment.created":
            accept_comment(session, the_site(session), "msg_race_other", new, now())
        else:
            apply_update(session, the_site(session), "msg_race_other", new, now())

    with paused_after(monkeypatch, lifecycle, "locked_comment", Racer(engine, deliver)) as overtook:
        answer = send(client, secret, updated("c-r9", ADVICE, "2026-11-26T11:00:00Z"))

    assert answer.status_code in (200, 202), answer.get_json()
    if engine.dialect.name == "postgresql":
        assert overtook == [True], "the other delivery did not commit inside the window it is meant to test"
    row = comment_row(engine, answer.get_json()["id"])
    assert row.body == left
    assert row.site_updated_at.replace(tzinfo=UTC) == max(
        datetime(2026, 11, 26, 11, tzinfo=UTC), racer_event.data.as_new_comment().version_at
    )
