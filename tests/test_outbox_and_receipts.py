"""The outbox relay's quiet window and the purge of old webhook receipts, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from models.db import SQLITE_BEGIN
from models.entities import OutboxMessage, WebhookReceipt
from moderation import outbox, registry
from moderation.intake import NewComment, WebhookIdReusedError, accept_comment, purge_receipts
from moderation.sites import create_site, require_site
from server.factory import build_celery
from server.settings import Settings
from tests.conftest import SiteCredentials, TrainedModel
from tests.support.faults import queued
from tests.support.services import free_port
from tests.support.signing import comment_event, encode, signed_headers
from workers.app import PURGE_RECEIPTS_TASK, RELAY_EXPIRES, RELAY_OUTBOX_TASK, ModerationCelery
from workers.publisher import CeleryPublisher
from workers.queues import CLASSIFY_QUEUE
from workers.tasks import beat_send_time

NOW = datetime.now(UTC).replace(microsecond=0)
QUIET = timedelta(seconds=30)
SITE = "backpain-advisor"


@pytest.fixture
def site_name(sessions: sessionmaker[Session]) -> str:
    with sessions.begin() as session:
        create_site(session, SITE)
    return SITE


def accept(
    sessions: sessionmaker[Session], external_id: str, at: datetime, body: str = "Massage helped me a lot."
) -> int:
    """A comment accepted at ``at`` as intake does: its receipt and its outbox row written then too."""
    with sessions.begin() as session:
        new = NewComment(external_id=external_id, article_id="massage-therapy", body=body)
        site = require_site(session, SITE)
        return accept_comment(session, site, f"wh-{external_id}", new, at, payload_sha256=f"sha-{body}").comment_id


def due(sessions: sessionmaker[Session], now: datetime) -> list[int]:
    """The comments whose outbox rows the relay would publish again at ``now``."""
    with sessions() as session:
        return [m.comment_id for m in outbox.due_messages(session, now - QUIET)]


# --- the outbox's quiet window -----------------------------------------------------------------------


def test_an_outbox_row_is_due_only_once_the_quiet_window_after_it_was_written_has_passed(
    sessions: sessionmaker[Session], site_name: str
) -> None:
    """The broker got the message at intake, most likely: the relay waits out the window before publishing."""
    comment_id = accept(sessions, "c-1", NOW)
    assert due(sessions, NOW) == []
    assert due(sessions, NOW + QUIET - timedelta(seconds=1)) == []
    assert due(sessions, NOW + QUIET) == []  # due only once the window is over, not as it ends
    assert due(sessions, NOW + QUIET + timedelta(seconds=1)) == [comment_id]


def test_publishing_a_row_again_restarts_its_quiet_window(sessions: sessionmaker[Session], site_name: str) -> None:
    """A row written long ago and just published is not due again until the window from that publish passes."""
    old = accept(sessions, "c-old", NOW - timedelta(hours=1))
    other = accept(sessions, "c-other", NOW - timedelta(hours=1))
    assert due(sessions, NOW) == [old, other]

    with sessions.begin() as session:
        (row_id,) = session.scalars(select(OutboxMessage.id).where(OutboxMessage.comment_id == old))
        outbox.mark_published(session, [row_id], NOW, due_before=NOW)

    assert due(sessions, NOW) == [other]  # only the one published stays quiet
    assert due(sessions, NOW + QUIET - timedelta(seconds=1)) == [other]
    assert due(sessions, NOW + QUIET + timedelta(seconds=1)) == [old, other]
    with sessions() as session:
        row = session.get_one(OutboxMessage, row_id)
        assert (row.published_at, row.attempts) == (NOW, 1)


def test_the_relay_notes_a_publish_before_sending_and_puts_back_what_the_broker_refused(
    settings: Settings,
    sessions: sessionmaker[Session],
    site_name: str,
    monkeypatch: pytest.MonkeyPatch,
    active_model: TrainedModel,
) -> None:
    """A worker may take a relayed message before the relay's next statement: it must find the publish noted
    (runs are counted per publish). With the broker down, nothing stays noted: the row is due next round."""
    comment_id = accept(sessions, "c-1", datetime.now(UTC) - timedelta(minutes=1))
    down = build_celery(settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}))
    try:
        assert down.tasks[RELAY_OUTBOX_TASK].run() == 0
    finally:
        down.runtime.sessions.kw["bind"].dispose()
    with sessions() as session:
        row = session.scalars(select(OutboxMessage)).one()
        assert (row.comment_id, row.published_at, row.attempts) == (comment_id, None, 0)

    seen: list[int] = []
    up = build_celery(settings)
    sending = CeleryPublisher.classify

    def look_while_sending(publisher: CeleryPublisher, comment: int, revision: int | None = None) -> None:
        with sessions() as other:  # what a worker would read the moment the message is on the queue
            other.connection(execution_options={SQLITE_BEGIN: "DEFERRED"})
            seen.extend(other.scalars(select(OutboxMessage.attempts)))
        sending(publisher, comment, revision)

    monkeypatch.setattr(CeleryPublisher, "classify", look_while_sending)  # it still sends, to the real broker
    try:
        assert up.tasks[RELAY_OUTBOX_TASK].run() == 1
    finally:
        up.runtime.sessions.kw["bind"].dispose()
    assert seen == [1]


def test_the_relay_does_not_publish_a_row_again_within_its_quiet_window(
    celery: ModerationCelery,
    sessions: sessionmaker[Session],
    site_name: str,
    redis_url: str,
    active_model: TrainedModel,
) -> None:
    """The relay task on the real broker: one classify message for a row whose work was lost, then none
    while the window from that publish lasts, and the row due again once it is over."""
    celery.runtime.outbox_quiet = QUIET
    comment_id = accept(sessions, "c-1", datetime.now(UTC) - timedelta(minutes=1))
    queue = redis.Redis.from_url(redis_url)

    assert celery.tasks[RELAY_OUTBOX_TASK].run() == 1
    assert celery.tasks[RELAY_OUTBOX_TASK].run() == 0
    messages = cast(list[bytes], queue.lrange("moderation", 0, -1))
    assert len(messages) == 1 and b"moderation.classify" in messages[0]

    with sessions() as session:
        (published_at,) = session.scalars(select(OutboxMessage.published_at))
    assert published_at is not None
    assert due(sessions, published_at + QUIET - timedelta(seconds=1)) == []
    assert due(sessions, published_at + QUIET + timedelta(seconds=1)) == [comment_id]


def test_the_relay_sends_nothing_while_no_model_can_be_loaded(
    celery: ModerationCelery, sessions: sessionmaker[Session], site_name: str, trained_model: TrainedModel
) -> None:
    """Each waiting comment's own task retries until a model is active: a copy relayed every quiet time would
    retry beside it, one more each time for as long as the outage lasts. Once a model is active, what still
    waits is relayed (a message lost meanwhile included)."""
    comment_id = accept(sessions, "c-1", datetime.now(UTC) - timedelta(minutes=10))

    assert celery.tasks[RELAY_OUTBOX_TASK].run() == 0
    assert outbox_rows(sessions) == [(comment_id, None, 0)]

    with sessions.begin() as session:
        registry.register(session, trained_model.version, trained_model.artifact, trained_model.model.card)
        registry.activate(session, trained_model.version)
    assert celery.tasks[RELAY_OUTBOX_TASK].run() == 1
    assert [attempts for _, _, attempts in outbox_rows(sessions)] == [1]


def test_a_relay_sends_nothing_published_after_beat_sent_it_which_is_still_queued_behind_it(
    celery: ModerationCelery, sessions: sessionmaker[Session], site_name: str, active_model: TrainedModel
) -> None:
    """The relay's message waited 20 s behind a backlog: work published before beat sent it has been taken off
    the queue (first in, first out), and work quiet for OUTBOX_QUIET_SECONDS (1 s here) but published after
    it is still queued behind it: not sent again, nor taken out of the batches a worker decides."""
    now = datetime.now(UTC)
    taken = accept(sessions, "c-taken", now - timedelta(seconds=40))
    at_the_margin = accept(sessions, "c-margin", now - timedelta(seconds=23))  # within SEND_MARGIN of the send
    queued = accept(sessions, "c-queued", now - timedelta(seconds=10))
    relay = celery.tasks[RELAY_OUTBOX_TASK]
    sent = now - timedelta(seconds=20)
    relay.push_request(expires=(sent + timedelta(seconds=RELAY_EXPIRES)).isoformat())  # as beat sends it
    try:
        assert relay.run() == 1
    finally:
        relay.pop_request()
    assert [(comment, attempts) for comment, _, attempts in outbox_rows(sessions)] == [
        (taken, 1),
        (at_the_margin, 0),
        (queued, 0),
    ]
    assert relay.run() == 2  # run by hand (no message, so no send time): quiet is enough


def test_beat_sends_the_relay_with_the_expiry_it_reads_its_send_time_from(
    celery: ModerationCelery, redis_url: str
) -> None:
    """The message on the real broker, as beat sends it (the task's own options): its expiry header names
    the moment it was sent, RELAY_EXPIRES ahead."""
    before = datetime.now(UTC)
    celery.tasks[RELAY_OUTBOX_TASK].apply_async()
    after = datetime.now(UTC)
    raw = redis.Redis.from_url(redis_url).lindex(CLASSIFY_QUEUE, 0)
    headers = json.loads(cast(bytes, raw))["headers"]
    assert headers["task"] == RELAY_OUTBOX_TASK
    sent = beat_send_time(headers["expires"])
    assert sent is not None and before - timedelta(seconds=1) <= sent <= after + timedelta(seconds=1)


def outbox_rows(sessions: sessionmaker[Session]) -> list[tuple[int, datetime | None, int]]:
    """(comment, last publish, publishes) of each outbox row."""
    with sessions() as session:
        rows = session.execute(
            select(OutboxMessage.comment_id, OutboxMessage.published_at, OutboxMessage.attempts).order_by(
                OutboxMessage.id
            )
        )
        return [(comment_id, published_at, attempts) for comment_id, published_at, attempts in rows]


# --- purging webhook receipts ------------------------------------------------------------------------


def receipt_ids(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return sorted(session.scalars(select(WebhookReceipt.webhook_id)))


def test_purging_deletes_the_receipts_older_than_the_cutoff_keeps_the_rest_and_counts_them(
    sessions: sessionmaker[Session], site_name: str
) -> None:
    cutoff = NOW - timedelta(days=7)
    accept(sessions, "long-ago", cutoff - timedelta(days=30))
    accept(sessions, "just-before", cutoff - timedelta(seconds=1))
    accept(sessions, "at-cutoff", cutoff)
    accept(sessions, "fresh", NOW)

    with sessions.begin() as session:
        assert purge_receipts(session, cutoff) == 2
    assert receipt_ids(sessions) == ["wh-at-cutoff", "wh-fresh"]
    with sessions.begin() as session:
        assert purge_receipts(session, cutoff) == 0  # nothing left to delete: nothing counted

    # A receipt kept still refuses its id for another payload; a purged one's id names nothing any more.
    with pytest.raises(WebhookIdReusedError), sessions.begin() as session:
        new = NewComment(external_id="c-new", article_id="massage-therapy", body="Another comment.")
        accept_comment(session, require_site(session, SITE), "wh-fresh", new, NOW, payload_sha256="sha-other")
    with sessions.begin() as session:
        new = NewComment(external_id="c-new", article_id="massage-therapy", body="Another comment.")
        again = accept_comment(
            session, require_site(session, SITE), "wh-long-ago", new, NOW, payload_sha256="sha-other"
        )
        assert again.created


def send(client: FlaskClient, site: SiteCredentials, comment_id: str, webhook_id: str) -> int:
    raw = encode(comment_event(site.name, comment_id, body=f"Comment {comment_id}: stretching helped me."))
    headers = signed_headers(site.secret, raw, message_id=webhook_id)
    status: int = client.post("/webhooks/comments", data=raw, headers=headers).status_code
    return status


def test_the_scheduled_purge_keeps_a_week_of_receipts_so_an_id_reused_within_it_is_still_refused(
    client: FlaskClient, site: SiteCredentials, celery: ModerationCelery, sessions: sessionmaker[Session]
) -> None:
    """Through intake and the beat's purge task: a receipt older than the retention is forgotten, a younger
    one still makes intake refuse its webhook-id for another payload (409)."""
    assert (send(client, site, "c-1", "msg_old"), send(client, site, "c-2", "msg_recent")) == (202, 202)
    now = datetime.now(UTC)
    # docs/webhooks.md: 7 days
    ages = {"msg_old": timedelta(days=7, hours=1), "msg_recent": timedelta(days=6, hours=23)}
    with sessions.begin() as session:
        for webhook_id, age in ages.items():
            session.execute(
                update(WebhookReceipt).where(WebhookReceipt.webhook_id == webhook_id).values(received_at=now - age)
            )

    assert celery.tasks[PURGE_RECEIPTS_TASK].run() == 1
    assert receipt_ids(sessions) == ["msg_recent"]
    assert send(client, site, "c-3", "msg_recent") == 409
    assert send(client, site, "c-4", "msg_old") == 202


# Two relays at once (beat's relay messages queued behind a backlog, taken by two worker processes together)
# read the same rows as due: the second must not publish a row the first just published.
def test_two_relays_at_once_publish_a_row_once(
    celery: ModerationCelery,
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    active_model: TrainedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs each relay's transaction alone (BEGIN IMMEDIATE)")
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    with sessions.begin() as session:
        site, _ = create_site(session, "relay-site")
        new = NewComment(external_id="c-1", article_id="a", body="Thanks, the stretches helped my lower back.")
        comment_id = accept_comment(session, site, "wh-1", new, long_ago).comment_id
        session.execute(update(OutboxMessage).values(created_at=long_ago))  # its message was lost long ago

    relay = celery.tasks[RELAY_OUTBOX_TASK]
    real_due = outbox.due_messages
    other_ran: list[int] = []
    started: list[bool] = []

    def due_then_the_other_relay_commits(session: Session, before: datetime, limit: int = 500) -> list[OutboxMessage]:
        rows = real_due(session, before, limit)
        if not started:  # the other worker process's relay runs to its end meanwhile (its own connection)
            started.append(True)
            other_ran.append(relay.run())
        return rows

    monkeypatch.setattr(outbox, "due_messages", due_then_the_other_relay_commits)
    relay.run()

    with sessions() as session:
        attempts = session.scalar(select(OutboxMessage.attempts).where(OutboxMessage.comment_id == comment_id))
    assert other_ran == [1]
    published = queued(settings.broker_url)  # the relays publish to the real broker, where no worker takes them
    assert (published, attempts) == (1, 1), f"published {published}, attempts {attempts}"
