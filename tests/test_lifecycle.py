"""Edits and deletions (issue 7): comment.updated and comment.deleted, in any order, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select, update

from models.db import make_session_factory
from models.entities import CallbackDelivery, Comment, Decision, DeliveryStatus, Moderator, OutboxMessage
from moderation.callbacks import ReplayError, record_delivered, replay
from moderation.classifier import ModerationModel
from moderation.decisions import Decided, decide_comment
from moderation.intake import NewComment
from moderation.lifecycle import apply_update
from moderation.reasons import Reason
from moderation.review import ReviewError, record_verdict
from moderation.sites import create_site, get_site
from server.settings import Settings
from tests.conftest import TrainedModel
from tests.support.invariants import check_invariants, settled
from tests.support.processes import Stack, wait_until
from tests.support.signing import comment_event, encode, signed_headers
from tests.support.site_server import SiteServer

SITE = "edits-site"
ORDINARY = "Thanks for this article, I had no idea massage could help with back pain."
OTHER_ORDINARY = "Lovely article, I will show it to my mum who has had a sore back all winter."
ADVICE = "That's sciatica, not a muscle. Take 800mg ibuprofen every 6 hours and skip the physio."
SPAM = "Best prices on pain pills, no prescription needed!!! Order now at www.cheap-rx-pharmacy.xyz"


@pytest.fixture
def secret(engine: Engine) -> str:
    with make_session_factory(engine).begin() as session:
        _, secret = create_site(session, SITE, "http://127.0.0.1:9/callback")
    return secret


def created(comment_id: str, body: str = ORDINARY, at: str = "2026-11-26T10:00:00Z") -> dict[str, Any]:
    return comment_event(SITE, comment_id, body=body, created_at=at)


def updated(comment_id: str, body: str, at: str, **data: Any) -> dict[str, Any]:
    event = comment_event(SITE, comment_id, body=body, created_at="2026-11-26T10:00:00Z", updated_at=at, **data)
    event["type"] = "comment.updated"
    return event


def deleted(comment_id: str, at: str = "2026-11-26T12:00:00Z") -> dict[str, Any]:
    return {"type": "comment.deleted", "data": {"comment_id": comment_id, "site": SITE, "deleted_at": at}}


def send(client: FlaskClient, secret: str, event: dict[str, Any], message_id: str | None = None) -> Any:
    body = encode(event)
    return client.post("/webhooks/comments", data=body, headers=signed_headers(secret, body, message_id=message_id))


def decide(engine: Engine, model: ModerationModel, comment_id: int) -> Decided | None:
    with make_session_factory(engine).begin() as session:
        return decide_comment(session, comment_id, model, datetime.now(UTC))


def comment_row(engine: Engine, comment_id: int) -> Any:
    with engine.connect() as connection:
        return connection.execute(select(Comment).where(Comment.id == comment_id)).one()


def decisions_of(engine: Engine, comment_id: int) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(Decision).where(Decision.comment_id == comment_id).order_by(Decision.id)))


def deliveries_of(engine: Engine, comment_id: int) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(CallbackDelivery).where(CallbackDelivery.comment_id == comment_id).order_by(CallbackDelivery.id)
            )
        )


def outbox_rows(engine: Engine, comment_id: int) -> int:
    with engine.connect() as connection:
        query = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.comment_id == comment_id)
        return int(connection.scalar(query) or 0)


def mark_delivered(engine: Engine, comment_id: int) -> None:
    """What the notify task records when the site answered 2xx."""
    with make_session_factory(engine).begin() as session:
        for delivery in session.scalars(select(CallbackDelivery).where(CallbackDelivery.comment_id == comment_id)):
            if delivery.status == DeliveryStatus.PENDING:
                record_delivered(delivery, 200, datetime.now(UTC))


def moderator_verdict(engine: Engine, comment_id: int, action: str, reason: str | None = None) -> None:
    with make_session_factory(engine).begin() as session:
        moderator = session.scalar(select(Moderator).where(Moderator.email == "ana@example.org"))
        if moderator is None:
            moderator = Moderator(email="ana@example.org", password_hash="x", role="moderator")
            session.add(moderator)
            session.flush()
        current = session.scalar(select(Decision.id).where(Decision.comment_id == comment_id, Decision.is_current))
        record_verdict(session, comment_id, moderator, action, reason, None, current, datetime.now(UTC))


# --- updates -------------------------------------------------------------------------------------------


def test_an_update_before_its_create_stores_the_comment_and_the_create_repeats_it(
    client: FlaskClient, secret: str, engine: Engine, redis_url: str
) -> None:
    first = send(client, secret, updated("c-1", OTHER_ORDINARY, "2026-11-26T11:00:00Z"))
    assert first.status_code == 202
    late_create = send(client, secret, created("c-1", ORDINARY))
    assert late_create.status_code == 200 and late_create.get_json()["id"] == first.get_json()["id"]

    stored = comment_row(engine, first.get_json()["id"])
    assert stored.body == OTHER_ORDINARY
    assert stored.site_updated_at == datetime(2026, 11, 26, 11, tzinfo=UTC)
    assert outbox_rows(engine, stored.id) == 1
    assert len(cast(list[bytes], redis.Redis.from_url(redis_url).lrange("moderation", 0, -1))) == 1


def test_a_stale_update_is_acknowledged_and_changes_nothing(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel
) -> None:
    comment_id = send(client, secret, created("c-2")).get_json()["id"]
    decide(engine, active_model.model, comment_id)
    assert send(client, secret, updated("c-2", ADVICE, "2026-11-26T11:00:00Z")).status_code == 202
    decide(engine, active_model.model, comment_id)
    before = decisions_of(engine, comment_id)

    older = send(client, secret, updated("c-2", SPAM, "2026-11-26T10:30:00Z"))
    same_time = send(client, secret, updated("c-2", SPAM, "2026-11-26T11:00:00Z"))

    assert (older.status_code, same_time.status_code) == (200, 200)
    assert older.get_json()["status"] == "held"
    assert comment_row(engine, comment_id).body == ADVICE
    assert decisions_of(engine, comment_id) == before
    assert outbox_rows(engine, comment_id) == 0


def test_an_approved_comment_edited_into_advice_goes_back_to_hold_and_the_site_is_told(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel, redis_url: str
) -> None:
    comment_id = send(client, secret, created("c-3")).get_json()["id"]
    assert decide(engine, active_model.model, comment_id) is not None
    mark_delivered(engine, comment_id)
    assert comment_row(engine, comment_id).status == "approved"
    redis.Redis.from_url(redis_url).flushdb()

    response = send(client, secret, updated("c-3", ADVICE, "2026-11-26T11:00:00Z"))

    assert response.status_code == 202 and response.get_json()["status"] == "pending"
    assert [d.is_current for d in decisions_of(engine, comment_id)] == [False]
    assert outbox_rows(engine, comment_id) == 1
    assert b"moderation.classify" in cast(list[bytes], redis.Redis.from_url(redis_url).lrange("moderation", 0, -1))[0]

    decided = decide(engine, active_model.model, comment_id)
    assert decided is not None and decided.outcome == "hold" and "medical_advice" in decided.reasons
    assert decided.delivery_id is not None
    assert comment_row(engine, comment_id).status == "held"
    first, second = deliveries_of(engine, comment_id)
    assert first.status == "delivered" and first.payload["data"]["status"] == "approved"
    assert second.status == "pending" and second.event == "comment.decided"
    assert second.payload["data"]["status"] == "held" and second.payload["data"]["decision"] == "hold"
    assert outbox_rows(engine, comment_id) == 0


def test_an_edits_decision_counts_its_wait_from_the_edit_not_the_first_arrival(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel
) -> None:
    """What `moderation_end_to_end_seconds` observes: the first text's wait, then the edit's own."""
    comment_id = send(client, secret, created("c-wait")).get_json()["id"]
    first = decide(engine, active_model.model, comment_id)
    received_at = comment_row(engine, comment_id).received_at
    assert first is not None and first.waiting_since == received_at
    back_then = received_at - timedelta(hours=5)  # as if the comment had arrived hours before its edit
    with engine.begin() as connection:
        connection.execute(update(Comment).where(Comment.id == comment_id).values(received_at=back_then))

    edit_sent = datetime.now(UTC)
    send(client, secret, updated("c-wait", OTHER_ORDINARY, "2026-11-26T11:00:00Z"))
    second = decide(engine, active_model.model, comment_id)

    assert second is not None and second.waiting_since >= edit_sent - timedelta(seconds=1)
    assert (datetime.now(UTC) - second.waiting_since) < timedelta(minutes=1)


def test_an_edit_that_keeps_the_outcome_still_tells_the_site(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel
) -> None:
    """Intake answered the edit with "pending": a site that hides edited text waits for this callback."""
    comment_id = send(client, secret, created("c-4")).get_json()["id"]
    decide(engine, active_model.model, comment_id)
    mark_delivered(engine, comment_id)

    answer = send(client, secret, updated("c-4", OTHER_ORDINARY, "2026-11-26T11:00:00Z"))
    decided = decide(engine, active_model.model, comment_id)

    assert answer.status_code == 202 and answer.get_json()["status"] == "pending"
    assert decided is not None and decided.outcome == "approve" and decided.delivery_id is not None
    first, second = deliveries_of(engine, comment_id)
    assert first.status == "delivered" and second.status == "pending" and second.event == "comment.decided"
    assert second.payload["data"]["status"] == "approved"
    assert [d.is_current for d in decisions_of(engine, comment_id)] == [False, True]
    mark_delivered(engine, comment_id)
    check_invariants(engine, [comment_id], None)


def test_an_unsent_callback_of_the_old_text_is_withdrawn_by_the_edit(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel
) -> None:
    comment_id = send(client, secret, created("c-5")).get_json()["id"]
    decide(engine, active_model.model, comment_id)  # its callback is still pending

    send(client, secret, updated("c-5", OTHER_ORDINARY, "2026-11-26T11:00:00Z"))
    decided = decide(engine, active_model.model, comment_id)

    old, new = deliveries_of(engine, comment_id)
    assert old.status == "cancelled"
    # Same outcome, but the site never got the first callback: it is told now.
    assert decided is not None and decided.delivery_id == new.id and new.status == "pending"


def test_an_edit_withdraws_the_dead_letters_of_older_decisions_too(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel
) -> None:
    """The model's dead-lettered callback, superseded by a moderator's verdict, must not be replayable once
    the text it judged is gone."""
    comment_id = send(client, secret, created("c-5b", body=ADVICE)).get_json()["id"]
    decide(engine, active_model.model, comment_id)
    with make_session_factory(engine).begin() as session:
        session.execute(update(CallbackDelivery).where(CallbackDelivery.comment_id == comment_id).values(status="dead"))
    moderator_verdict(engine, comment_id, "approve")
    mark_delivered(engine, comment_id)

    send(client, secret, updated("c-5b", OTHER_ORDINARY, "2026-11-26T11:00:00Z"))

    model_callback, verdict_callback = deliveries_of(engine, comment_id)
    assert (model_callback.status, verdict_callback.status) == ("cancelled", "delivered")
    with pytest.raises(ReplayError, match="was cancelled"), make_session_factory(engine).begin() as session:
        replay(session, model_callback.id, datetime.now(UTC))


def test_a_metadata_only_update_keeps_the_decision(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel
) -> None:
    comment_id = send(client, secret, created("c-6")).get_json()["id"]
    decide(engine, active_model.model, comment_id)

    event = updated("c-6", ORDINARY, "2026-11-26T11:00:00Z")
    event["data"]["article"]["title"] = "Massage and back pain, revised"
    response = send(client, secret, event)

    assert response.status_code == 200 and response.get_json()["status"] == "approved"
    assert comment_row(engine, comment_id).article_title == "Massage and back pain, revised"
    assert [d.is_current for d in decisions_of(engine, comment_id)] == [True]
    assert outbox_rows(engine, comment_id) == 0


def test_an_edit_keeps_the_search_columns_with_the_new_text_author_and_article(
    client: FlaskClient, secret: str, engine: Engine
) -> None:
    comment_id = send(client, secret, created("c-search", "Old words")).get_json()["id"]
    author = {"name": "Ma\u200bria", "email": "MARIA@example.org", "url": "https://maria.example/"}
    event = updated("c-search", "New w\u2060ords, \u00c9COLE", "2026-11-26T11:00:00Z", author=author)
    event["data"]["article"]["title"] = "Bandscheiben\u00advorfall"
    assert send(client, secret, event).status_code == 202  # new text: classified again

    with engine.connect() as connection:
        stored = connection.execute(
            select(Comment.search_text, Comment.search_author, Comment.search_article).where(Comment.id == comment_id)
        ).one()
    assert tuple(stored) == (
        "new words, école",
        "maria\u2063maria@example.org\u2063https://maria.example/",
        "massage-therapy\u2063bandscheibenvorfall",
    )


def test_a_moderators_verdict_does_not_carry_over_to_edited_text(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel
) -> None:
    comment_id = send(client, secret, created("c-7", ADVICE)).get_json()["id"]
    decide(engine, active_model.model, comment_id)
    moderator_verdict(engine, comment_id, "approve")
    assert comment_row(engine, comment_id).status == "approved"

    send(client, secret, updated("c-7", ORDINARY, "2026-11-26T11:00:00Z"))
    decided = decide(engine, active_model.model, comment_id)
    # The model alone would approve this text; a human approved only the old one.
    assert decided is not None and (decided.outcome, decided.reasons) == ("hold", [Reason.EDITED_AFTER_REVIEW])

    send(client, secret, updated("c-7", OTHER_ORDINARY, "2026-11-26T12:00:00Z"))
    again = decide(engine, active_model.model, comment_id)
    assert again is not None and (again.outcome, again.reasons) == ("hold", [Reason.EDITED_AFTER_REVIEW])

    moderator_verdict(engine, comment_id, "approve")
    send(client, secret, updated("c-7", ADVICE, "2026-11-26T13:00:00Z"))
    advice = decide(engine, active_model.model, comment_id)
    assert advice is not None and advice.outcome == "hold"
    assert "medical_advice" in advice.reasons and Reason.EDITED_AFTER_REVIEW in advice.reasons


class EditingWhileScoring:
    """A model that, while it scores, lets the site edit the comment in a second thread and transaction.

    The worker holds the comment's row lock while it scores (PostgreSQL; on SQLite every transaction
    begins IMMEDIATE), so the edit waits for the worker to commit and then retires the decision it made.
    Should the edit ever get in between, the worker's compare-and-swap drops its decision instead.
    """

    def __init__(self, model: ModerationModel, engine: Engine, external_id: str) -> None:
        self._model, self._engine, self._external_id = model, engine, external_id
        self.edit = threading.Thread(target=self._edit, daemon=True)
        self.edited = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _edit(self) -> None:
        with make_session_factory(self._engine).begin() as session:
            site = get_site(session, SITE)
            assert site is not None
            new = NewComment(
                external_id=self._external_id,
                article_id="massage-therapy",
                body=ADVICE,
                updated_at=datetime(2026, 11, 26, 11, tzinfo=UTC),
            )
            assert apply_update(session, site, "msg_edit_meanwhile", new, datetime.now(UTC)).queued
        self.edited.set()

    def _let_the_site_edit(self) -> None:
        if not self.edit.is_alive() and not self.edited.is_set():
            self.edit.start()
            self.edited.wait(1.0)

    def score(self, text: Any) -> Any:
        self._let_the_site_edit()
        return self._model.score(text)

    def score_and_explain(self, text: Any) -> Any:
        self._let_the_site_edit()
        return self._model.score_and_explain(text)

    def score_and_explain_many(self, texts: Any) -> Any:
        self._let_the_site_edit()
        return self._model.score_and_explain_many(texts)


def test_a_decision_on_text_edited_meanwhile_is_dropped(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel
) -> None:
    comment_id = send(client, secret, created("c-8")).get_json()["id"]
    racing = EditingWhileScoring(active_model.model, engine, "c-8")

    decided_old = decide(engine, racing, comment_id)  # type: ignore[arg-type]
    racing.edit.join(60)
    # The edit waited for the worker, then retired the decision on the old text.
    assert decided_old is not None and [d.is_current for d in decisions_of(engine, comment_id)] == [False]
    assert outbox_rows(engine, comment_id) == 1

    decided = decide(engine, active_model.model, comment_id)  # the edit's own task
    assert decided is not None and decided.outcome == "hold" and "medical_advice" in decided.reasons


# --- deletions ----------------------------------------------------------------------------------------


def test_a_deleted_comment_leaves_every_queue_and_is_never_told_again(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel
) -> None:
    comment_id = send(client, secret, created("c-9", ADVICE)).get_json()["id"]
    decide(engine, active_model.model, comment_id)  # held; its callback pending

    response = send(client, secret, deleted("c-9"))

    assert response.status_code == 200 and response.get_json()["status"] == "deleted"
    row = comment_row(engine, comment_id)
    assert row.status == "deleted" and row.deleted_at == datetime(2026, 11, 26, 12, tzinfo=UTC)
    assert [d.status for d in deliveries_of(engine, comment_id)] == ["cancelled"]
    assert decide(engine, active_model.model, comment_id) is None
    with pytest.raises(ReviewError):
        moderator_verdict(engine, comment_id, "approve")
    # no replay either
    with pytest.raises(ReplayError, match="was cancelled"), make_session_factory(engine).begin() as session:
        replay(session, deliveries_of(engine, comment_id)[0].id, datetime.now(UTC))

    # Later events, however new, change nothing: a delete is final.
    assert send(client, secret, updated("c-9", ORDINARY, "2026-11-27T10:00:00Z")).status_code == 200
    assert send(client, secret, created("c-9")).get_json()["status"] == "deleted"
    assert comment_row(engine, comment_id).body == ADVICE
    assert len(decisions_of(engine, comment_id)) == 1 and len(deliveries_of(engine, comment_id)) == 1
    assert outbox_rows(engine, comment_id) == 0
    check_invariants(engine, [comment_id], None)


def test_a_delete_before_the_create_keeps_a_tombstone(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel, redis_url: str
) -> None:
    first = send(client, secret, deleted("c-10"))
    late_create = send(client, secret, created("c-10", SPAM))
    late_update = send(client, secret, updated("c-10", SPAM, "2026-11-26T11:00:00Z"))

    assert [r.status_code for r in (first, late_create, late_update)] == [200, 200, 200]
    assert {r.get_json()["id"] for r in (first, late_create, late_update)} == {first.get_json()["id"]}
    row = comment_row(engine, first.get_json()["id"])
    assert row.status == "deleted" and row.body == ""
    with engine.connect() as connection:  # searchable as the empty comment it is, by nobody
        searched = select(Comment.search_text, Comment.search_author, Comment.search_article)
        assert tuple(connection.execute(searched.where(Comment.id == row.id)).one()) == ("", None, "\u2063")
    assert outbox_rows(engine, row.id) == 0
    assert redis.Redis.from_url(redis_url).llen("moderation") == 0
    check_invariants(engine, [row.id], None)


def test_a_pending_comment_deleted_before_classification_is_never_decided(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel
) -> None:
    comment_id = send(client, secret, created("c-11")).get_json()["id"]
    send(client, secret, deleted("c-11"))

    assert decide(engine, active_model.model, comment_id) is None
    assert decisions_of(engine, comment_id) == [] and outbox_rows(engine, comment_id) == 0


def test_the_dashboard_queues_leave_deleted_comments_out(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel
) -> None:
    from dashboard.queries import Filters, queue_counts, queue_page

    kept = send(client, secret, created("c-12", ADVICE)).get_json()["id"]
    gone = send(client, secret, created("c-13", ADVICE)).get_json()["id"]
    decide(engine, active_model.model, kept)
    decide(engine, active_model.model, gone)
    send(client, secret, deleted("c-13"))

    with make_session_factory(engine)() as session:
        for queue in ("held", "all"):
            page = queue_page(session, Filters(queue=queue))
            assert [c.id for c, _ in page.items] == [kept]
        assert queue_counts(session)["held"] == 1 and queue_counts(session)["all"] == 1


def test_a_repeated_delete_and_a_replayed_update_are_idempotent(
    client: FlaskClient, secret: str, engine: Engine, active_model: TrainedModel
) -> None:
    comment_id = send(client, secret, created("c-14")).get_json()["id"]
    update = updated("c-14", ADVICE, "2026-11-26T11:00:00Z")
    assert send(client, secret, update, message_id="msg_update_1").status_code == 202
    assert send(client, secret, update, message_id="msg_update_1").status_code == 200
    assert send(client, secret, update, message_id="msg_update_2").status_code == 200
    assert outbox_rows(engine, comment_id) == 1
    assert send(client, secret, deleted("c-14"), message_id="msg_delete").status_code == 200
    assert send(client, secret, deleted("c-14"), message_id="msg_delete").status_code == 200
    assert send(client, secret, deleted("c-14")).status_code == 200
    assert comment_row(engine, comment_id).status == "deleted"


# --- validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "bad_fields"),
    [
        ({**updated("c-1", ORDINARY, "2026-11-26T11:00:00Z"), "type": "comment.updated"}, set()),
        ({"type": "comment.updated", "data": {**created("c-1")["data"]}}, {"data.updated_at"}),
        ({"type": "comment.deleted", "data": {"comment_id": "c-1", "site": SITE}}, {"data.deleted_at"}),
        (
            {"type": "comment.deleted", "data": {"comment_id": "c-1", "site": SITE, "deleted_at": "yesterday"}},
            {"data.deleted_at"},
        ),
        (
            {"type": "comment.deleted", "data": {**deleted("c-1")["data"], "body": "x"}},
            {"data.body"},
        ),
        ({"type": "comment.edited", "data": {"comment_id": "c-1", "site": SITE}}, {"type"}),
    ],
    ids=["valid-update", "update-without-updated_at", "delete-without-time", "delete-bad-time", "delete-extra", "type"],
)
def test_update_and_delete_payloads_are_validated_naming_each_field(
    client: FlaskClient, secret: str, engine: Engine, event: dict[str, Any], bad_fields: set[str]
) -> None:
    response = send(client, secret, event)
    if not bad_fields:
        assert response.status_code == 202
        return
    assert response.status_code == 400
    assert {f["field"] for f in response.get_json()["fields"]} == bad_fields
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Comment)) == 0


OUT_OF_RANGE = [
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:00:00-05:00",
    "1969-12-31T23:59:59Z",
    "2099-01-01T00:00:00Z",
]


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
@pytest.mark.parametrize("kind", ["created_at", "updated_at", "deleted_at"])
def test_out_of_range_timestamps_are_refused_naming_the_field(
    client: FlaskClient, secret: str, engine: Engine, kind: str, moment: str
) -> None:
    """Years 1 and 9999 once overflowed converting to UTC (a 500); a far-future edit froze the comment."""
    if kind == "created_at":
        event = created("c-1", at=moment)
    elif kind == "updated_at":
        event = updated("c-1", ORDINARY, moment)
    else:
        event = deleted("c-1", moment)
    response = send(client, secret, event)
    assert response.status_code == 400
    assert {f["field"] for f in response.get_json()["fields"]} == {f"data.{kind}"}
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Comment)) == 0


def test_update_and_delete_need_the_sites_signature(client: FlaskClient, secret: str, engine: Engine) -> None:
    body = encode(deleted("c-1"))
    response = client.post("/webhooks/comments", data=body, headers=signed_headers("whsec_" + "A" * 32, body))
    assert response.status_code == 401


# --- end to end -------------------------------------------------------------------------------------------


@pytest.fixture
def site_server(engine: Engine) -> Iterator[SiteServer]:
    server = SiteServer().start()
    with make_session_factory(engine).begin() as session:
        _, server.secret = create_site(session, SITE, server.url)
    yield server
    server.stop()


@pytest.mark.slow
def test_edits_and_deletes_through_real_processes_keep_the_invariant(
    settings: Settings, tmp_path: Path, site_server: SiteServer, engine: Engine, active_model: TrainedModel
) -> None:
    stack = Stack(settings, tmp_path)
    try:
        _, base = stack.web()
        stack.worker()

        def post(event: dict[str, Any]) -> int:
            body = encode(event)
            response = httpx.post(
                f"{base}/webhooks/comments", content=body, headers=signed_headers(site_server.secret, body)
            )
            assert response.status_code in {200, 202}, response.text
            return int(response.json()["id"])

        ids = {
            cid: post(created(cid, body)) for cid, body in [("e-1", ORDINARY), ("e-2", OTHER_ORDINARY), ("e-3", ADVICE)]
        }
        wait_until(lambda: settled(engine, ids.values(), [site_server]), timeout=90, what="first decisions")

        post(updated("e-1", ADVICE, "2026-11-26T11:00:00Z"))  # approved -> held, told
        post(updated("e-1", SPAM, "2026-11-26T10:30:00Z"))  # stale: nothing
        post(deleted("e-2"))  # approved, then deleted
        post(updated("e-2", SPAM, "2026-11-27T11:00:00Z"))  # after the delete: nothing
        ids["e-4"] = post(updated("e-4", ADVICE, "2026-11-26T11:00:00Z"))  # update before create
        post(created("e-4", ORDINARY))
        ids["e-5"] = post(deleted("e-5"))  # delete before create
        post(created("e-5", SPAM))

        wait_until(lambda: settled(engine, ids.values(), [site_server]), timeout=90, what="edits decided")
        summary = check_invariants(engine, ids.values(), [site_server])

        told = [(e["data"]["comment_id"], e["data"]["status"]) for e in site_server.events()]
        assert ("e-1", "approved") in told and ("e-1", "held") in told
        assert ("e-4", "held") in told and not any(cid == "e-5" for cid, _ in told)
        assert [s for cid, s in told if cid == "e-2"] == ["approved"]
        assert comment_row(engine, ids["e-2"]).status == "deleted"
        assert summary["comments"] == 5
    finally:
        stack.stop_all()


# --- the migration ----------------------------------------------------------------------------------------


def test_migration_0004_matches_the_models_and_goes_back_and_forth(empty_database_url: str) -> None:
    from sqlalchemy import create_engine, text

    from models.migrate import downgrade_database, upgrade_database
    from tests.support.migrations import column_names, drift_from_the_models, store_an_old_comment

    url = empty_database_url
    upgrade_database(url, "0003")
    engine = create_engine(url)
    with engine.begin() as connection:  # a comment stored before 0004
        store_an_old_comment(connection)
    upgrade_database(url)
    assert drift_from_the_models(url) == []
    with engine.connect() as connection:
        row = connection.execute(text("SELECT revision, site_updated_at, created_at FROM comments")).one()
    assert row.revision == 0 and row.site_updated_at == row.created_at
    engine.dispose()
    downgrade_database(url, "0003")
    assert "revision" not in column_names(url, "comments")
    upgrade_database(url)
