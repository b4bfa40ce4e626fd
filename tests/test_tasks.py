"""Worker tasks called as a worker calls them, on the real database and Redis."""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from prometheus_client import REGISTRY
from sqlalchemy import Engine, delete, event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from models.db import SQLITE_BEGIN, create_db_engine
from models.entities import CallbackDelivery, Comment, Decision, DeliveryStatus, OutboxMessage
from moderation import callbacks, outbox, registry
from moderation.decisions import TRIES_BEFORE_HOLDING, hold_unclassified, note_relayed_try
from moderation.intake import NewComment, accept_comment
from moderation.lifecycle import apply_update, send_back_unclassified
from moderation.registry import RegistryError
from moderation.sites import create_site, require_site
from tests.conftest import TrainedModel
from tests.support.site_server import Answer, SiteServer
from workers import tasks as tasks_module
from workers.app import CLASSIFY_TASK, NOTIFY_TASK, RELAY_OUTBOX_TASK, CeleryOptions, ModerationCelery
from workers.tasks import LEASE_MARGIN


def unavailable() -> float:
    return REGISTRY.get_sample_value("moderation_model_unavailable_total") or 0.0


def test_a_classify_task_without_a_loadable_model_is_put_off_and_counted(celery: ModerationCelery) -> None:
    """No active model: the task asks to be retried later, and the counter says so (the web's /readyz does
    not look at models, so this is what an operator alerts on)."""
    before = unavailable()
    with pytest.raises(Retry) as retried:
        celery.tasks[CLASSIFY_TASK].run(1, 0)
    assert isinstance(retried.value.__cause__, RegistryError) and "no model is active" in str(retried.value.__cause__)
    assert unavailable() == before + 1


# A model file that cannot be read (an I/O error on a shared MODEL_DIR: an NFS stale file handle, EIO, EACCES)
# is treated as a missing one: the classify task is put off and counted, and the relay waits for a model.
def stale_handle(path: Path) -> str:
    raise OSError(errno.ESTALE, "Stale file handle", str(path))


def an_io_comment(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        site, _ = create_site(session, "io-site")
        new = NewComment(external_id="c-1", article_id="a", body="Thanks, the stretches helped my lower back.")
        return accept_comment(session, site, "wh-1", new, datetime.now(UTC)).comment_id


def test_an_unreadable_model_file_puts_the_classify_task_off_like_a_missing_one(
    celery: ModerationCelery,
    sessions: sessionmaker[Session],
    active_model: TrainedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    comment_id = an_io_comment(sessions)
    monkeypatch.setattr(registry, "file_sha256", stale_handle)
    before = unavailable()
    # A missing file is RegistryError -> self.retry(countdown=30); an unreadable one must be treated alike.
    with pytest.raises(Retry) as retried:
        celery.tasks[CLASSIFY_TASK].run(comment_id, 0)
    assert isinstance(retried.value.__cause__, RegistryError) and "Stale file handle" in str(retried.value.__cause__)
    assert unavailable() == before + 1


def test_an_unreadable_model_file_makes_the_relay_wait_not_crash(
    celery: ModerationCelery,
    sessions: sessionmaker[Session],
    active_model: TrainedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    an_io_comment(sessions)
    monkeypatch.setattr(registry, "file_sha256", stale_handle)
    assert celery.tasks[RELAY_OUTBOX_TASK].run() == 0


def test_every_task_ends_before_the_broker_would_hand_it_to_another_worker(celery: ModerationCelery) -> None:
    """With late acks, Redis redelivers a task still unacknowledged after the visibility timeout, even while
    its first worker is busy with it: a task allowed to run longer could run twice. The hard limit counts (a
    soft one is an exception that code may catch and go on)."""
    visibility = CeleryOptions(broker_url="redis://unused").visibility_timeout
    ours = {name: task for name, task in celery.tasks.items() if not name.startswith("celery.")}
    assert ours
    for name, task in ours.items():
        limit = task.time_limit
        assert limit is not None, f"{name} has no hard time limit"
        assert limit < visibility, f"{name} may run {limit} s, past the {visibility} s visibility timeout"


# --- notify: the delivery lease, and one delivery's unexpected failure ------------------------------


@pytest.fixture
def site_server() -> Iterator[SiteServer]:
    server = SiteServer().start()
    yield server
    server.stop()


def decided_comments(sessions: sessionmaker[Session], site_name: str, count: int, start: int = 0) -> list[int]:
    """``count`` comments of the site, each decided with its callback pending; the deliveries' ids, in order."""
    now = datetime.now(UTC)
    ids = []
    with sessions.begin() as session:
        site = require_site(session, site_name)
        for number in range(start, start + count):
            new = NewComment(external_id=f"{site_name}-{number}", article_id="massage-therapy", body="Nice read.")
            comment = session.get_one(
                Comment, accept_comment(session, site, f"wh-{site_name}-{number}", new, now).comment_id
            )
            decision = Decision(comment_id=comment.id, outcome="approve", is_current=True, reasons=[], created_at=now)
            session.add(decision)
            comment.status = "approved"
            session.flush()
            delivery = callbacks.schedule_callback(session, site, comment, decision, callbacks.COMMENT_DECIDED, now)
            assert delivery is not None
            ids.append(delivery.id)
    return ids


def deliveries(sessions: sessionmaker[Session], ids: list[int]) -> list[CallbackDelivery]:
    with sessions() as session:
        return [session.get_one(CallbackDelivery, each) for each in ids]


def message_ids(server: SiteServer) -> list[str]:
    with server._lock:
        return [r.headers["webhook-id"] for r in server.received]


WINDOW = 2.5  # seconds after the claim in which a POST may start, in the lease test below


def test_notify_stops_before_a_post_could_outlast_the_lease_and_hands_the_rest_back_due(
    celery: ModerationCelery, sessions: sessionmaker[Session], site_server: SiteServer
) -> None:
    """The claim leases all three deliveries until one moment; a POST starts only while that lease outlasts
    the POST's timeout and LEASE_MARGIN. The site takes WINDOW + 0.3 s over the first: after it, a second POST could
    end past the lease (when another task may claim the same delivery), so the task stops and gives the
    other two back: pending and due at once, not left "sending" until the lease lapses."""
    with sessions.begin() as session:
        _, site_server.secret = create_site(session, "slow-site", site_server.url)
    ids = decided_comments(sessions, "slow-site", 3)

    def slow_first(attempt: int) -> Answer:
        if attempt == 1:
            threading.Event().wait(WINDOW + 0.3)
        return (204, {})

    site_server.responder = slow_first
    runtime = celery.runtime
    default_retry = runtime.retry
    runtime.callback_timeout = WINDOW + 1.5  # the slow answer comes within it
    # Time for one POST to start within WINDOW of the claim, and none after the first. The window was 1 s, and
    # on a loaded machine a full run once took longer than that to start the first.
    runtime.retry = replace(
        default_retry, lease_seconds=runtime.callback_timeout + LEASE_MARGIN.total_seconds() + WINDOW
    )
    before = datetime.now(UTC)

    result: str = celery.tasks[NOTIFY_TASK].run(delivery_ids=ids)

    assert result == DeliveryStatus.DELIVERED  # one outcome: the first delivery's
    first, *rest = deliveries(sessions, ids)
    assert message_ids(site_server) == [first.message_id]
    assert (first.status, first.attempts) == (DeliveryStatus.DELIVERED, 1)
    after = datetime.now(UTC)
    for delivery in rest:
        assert (delivery.status, delivery.lease_until, delivery.attempts) == (DeliveryStatus.PENDING, None, 0)
        assert before <= delivery.next_attempt_at <= after
    with sessions() as session:
        assert callbacks.due_deliveries(session, datetime.now(UTC)) == ids[1:]

    # Due again means the next task sends them (the retry loop's, or here the same task once more).
    runtime.retry = default_retry
    assert celery.tasks[NOTIFY_TASK].run(delivery_ids=ids) == f"{DeliveryStatus.DELIVERED},{DeliveryStatus.DELIVERED}"
    assert message_ids(site_server) == [d.message_id for d in deliveries(sessions, ids)]
    assert all(r.verified for r in site_server.received)


def test_notify_starts_no_post_that_would_leave_no_time_to_record_it_within_the_lease(
    celery: ModerationCelery, sessions: sessionmaker[Session], site_server: SiteServer
) -> None:
    """A POST that would end within its lease but less than half a second before it is not started: its
    outcome must be stored while the delivery is still this task's. All are given back, due at once."""
    with sessions.begin() as session:
        _, site_server.secret = create_site(session, "tight-site", site_server.url)
    ids = decided_comments(sessions, "tight-site", 2)
    celery.runtime.callback_timeout = 1.0
    celery.runtime.retry = replace(celery.runtime.retry, lease_seconds=1.0 + 0.5)
    before = datetime.now(UTC)

    assert celery.tasks[NOTIFY_TASK].run(delivery_ids=ids) == "handed-back"

    assert site_server.received == []
    after = datetime.now(UTC)
    for delivery in deliveries(sessions, ids):
        assert (delivery.status, delivery.lease_until, delivery.attempts) == (DeliveryStatus.PENDING, None, 0)
        assert before <= delivery.next_attempt_at <= after


def test_an_unexpected_error_sending_one_callback_is_that_deliverys_failed_attempt_and_the_others_are_sent(
    celery: ModerationCelery, sessions: sessionmaker[Session], site_server: SiteServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A site whose stored secret the signing library refuses (EmptyWebhookSecretError: no ValueError and
    no HTTP error, raised before the request) fails its own delivery, recorded as an attempt with the error
    and retried later; the deliveries claimed with it, before and after it, are sent and recorded."""
    with sessions.begin() as session:
        _, site_server.secret = create_site(session, "good-site", site_server.url)
        broken, _ = create_site(session, "broken-secret-site", site_server.url)
        (key,) = broken.secrets
        key.secret = "whsec_!!!!"  # nothing base64 can decode: an empty key to the library
    good_first = decided_comments(sessions, "good-site", 1)
    bad = decided_comments(sessions, "broken-secret-site", 1)
    good_last = decided_comments(sessions, "good-site", 1, start=1)
    ids = good_first + bad + good_last
    before = datetime.now(UTC)

    with caplog.at_level(logging.INFO, logger="workers.tasks"):
        result: str = celery.tasks[NOTIFY_TASK].run(delivery_ids=ids)

    assert result.split(",") == [DeliveryStatus.DELIVERED, DeliveryStatus.PENDING, DeliveryStatus.DELIVERED]
    # the failure is a warning in the worker's log, saying what went wrong (a tester found no trace of it there)
    (warned,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned.startswith(f"callback {bad[0]} failed (EmptyWebhookSecretError:"), warned
    assert warned.endswith("; now pending"), warned
    sent_first, failed, sent_last = deliveries(sessions, ids)
    assert message_ids(site_server) == [sent_first.message_id, sent_last.message_id]
    assert all(r.verified for r in site_server.received)
    assert (sent_first.status, sent_last.status) == (DeliveryStatus.DELIVERED, DeliveryStatus.DELIVERED)
    assert (failed.status, failed.attempts, failed.lease_until) == (DeliveryStatus.PENDING, 1, None)
    assert failed.last_status_code is None
    assert failed.last_error is not None and failed.last_error.startswith("EmptyWebhookSecretError:")
    assert failed.next_attempt_at > before  # retried after a backoff, like any failed attempt


def test_a_site_with_no_usable_secret_fails_its_own_delivery_unsent_and_the_batch_goes_on(
    celery: ModerationCelery, sessions: sessionmaker[Session], site_server: SiteServer
) -> None:
    """Every secret of one site expired (a hand-edited row): its callback is not sent unsigned and is a
    failed attempt saying why; before, the claim of the whole batch failed and no site was told anything."""
    with sessions.begin() as session:
        _, site_server.secret = create_site(session, "good-site", site_server.url)
        expired, _ = create_site(session, "expired-secret-site", site_server.url)
        (key,) = expired.secrets
        key.expires_at = datetime.now(UTC) - timedelta(minutes=1)
    ids = decided_comments(sessions, "expired-secret-site", 1) + decided_comments(sessions, "good-site", 1)

    result: str = celery.tasks[NOTIFY_TASK].run(delivery_ids=ids)

    assert result.split(",") == [DeliveryStatus.PENDING, DeliveryStatus.DELIVERED]
    failed, sent = deliveries(sessions, ids)
    assert message_ids(site_server) == [sent.message_id]
    assert (failed.status, failed.attempts, failed.last_status_code) == (DeliveryStatus.PENDING, 1, None)
    assert failed.last_error == "the site has no usable signing secret: rotate one"


# --- classify: a failing batch, and a decision the database refuses as a second one -----------------


def post_comment(
    sessions: sessionmaker[Session], site_name: str, external_id: str, author: str, ip: str, now: datetime
) -> int:
    with sessions.begin() as session:
        new = NewComment(
            external_id=external_id,
            article_id="massage-therapy",
            body="My physio suggested gentle stretching and it helped me over a few weeks.",
            author_email=author,
            author_ip=ip,
        )
        return accept_comment(session, require_site(session, site_name), f"wh-{external_id}", new, now).comment_id


def current_decisions(sessions: sessionmaker[Session], comment_id: int) -> list[int]:
    with sessions() as session:
        return list(session.scalars(select(Decision.id).where(Decision.comment_id == comment_id, Decision.is_current)))


def comment_status(sessions: sessionmaker[Session], comment_id: int) -> str:
    with sessions() as session:
        return session.get_one(Comment, comment_id).status


def broken_comment_first_in_line(sessions: sessionmaker[Session], now: datetime) -> int:
    """A "good-site" for healthy comments, and first in the outbox a comment whose decision fails every time
    (its site's stored advice threshold is out of range, so the policy refuses it): it joins every batch."""
    with sessions.begin() as session:
        create_site(session, "good-site")
        broken, _ = create_site(session, "broken-site")
        broken.advice_hold_threshold = 1.5
    return post_comment(sessions, "broken-site", "b-1", "bad@example.org", "198.51.100.1", now)


def test_when_a_batch_fails_its_comments_are_decided_alone_and_the_failing_one_is_kept_out_of_batches(
    celery: ModerationCelery,
    sessions: sessionmaker[Session],
    active_model: TrainedModel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A comment whose decision fails every time (its site's stored advice threshold is out of range, so
    the policy refuses it) waits first in the outbox and so joins every batch. The task whose batch failed
    decides each of the batch's comments alone: the others are decided (their own messages may have found
    them locked by the failed batch and ended), and the failing one is counted, kept out of later batches,
    and left for the relay."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    bad = broken_comment_first_in_line(sessions, now)
    first = post_comment(sessions, "good-site", "c-1", "ana@example.org", "198.51.100.2", now)
    second = post_comment(sessions, "good-site", "c-2", "bo@example.org", "198.51.100.3", now)
    assert celery.runtime.classify_batch > 2  # all three would be one batch

    with caplog.at_level(logging.WARNING, logger="workers.tasks"):
        outcome: str = celery.tasks[CLASSIFY_TASK].run(first, 0)  # intake's messages, with the revision
    assert len(outcome.split(",")) == 2  # its own comment and the batch's other healthy one
    assert [r.message for r in caplog.records] == [
        "a batch failed (one of its comments, maybe not this one); deciding each of its comments alone",
        "deciding this comment failed; left out of batches from now on",
    ]
    assert getattr(caplog.records[1], "comment_id", None) == bad
    assert [len(current_decisions(sessions, c)) for c in (first, second)] == [1, 1]
    assert (comment_status(sessions, bad), current_decisions(sessions, bad), tries(sessions, bad)) == (
        "pending",
        [],
        [1],
    )
    assert celery.tasks[CLASSIFY_TASK].run(second, 0) == "settled"

    later = post_comment(sessions, "good-site", "c-3", "cy@example.org", "198.51.100.4", now)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="workers.tasks"):
        assert celery.tasks[CLASSIFY_TASK].run(later, 0) in {"approve", "hold", "reject"}
    assert caplog.records == []  # the failing comment no longer joins a batch

    with pytest.raises(ValueError, match="advice_hold must be between 0 and 1"):
        celery.tasks[CLASSIFY_TASK].run(bad, 0)  # its own message fails; the same publish is not counted twice
    assert tries(sessions, bad) == [1]
    with sessions() as session:
        assert list(session.scalars(select(OutboxMessage.comment_id))) == [bad]  # the relay tries it again


def test_a_task_whose_own_comment_fails_alone_still_decides_and_tells_its_batch_mates(
    celery: ModerationCelery, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """The failing comment's own message: its batch fails, each comment is tried alone, the others are
    decided and their callbacks queued, and then the task fails with its own comment's error."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    bad = broken_comment_first_in_line(sessions, now)
    healthy = [
        post_comment(sessions, "good-site", f"c-{i}", f"p{i}@example.org", f"198.51.100.{10 + i}", now)
        for i in range(3)
    ]

    with pytest.raises(ValueError, match="advice_hold must be between 0 and 1"):
        celery.tasks[CLASSIFY_TASK].run(bad, 0)

    assert [len(current_decisions(sessions, c)) for c in healthy] == [1, 1, 1]
    assert [celery.runtime.settled.is_settled(c, 0) for c in healthy] == [True, True, True]
    assert (comment_status(sessions, bad), tries(sessions, bad)) == ("pending", [1])


@pytest.mark.parametrize("batch", [1, 20], ids=["alone", "batched"])
def test_a_second_current_decision_refused_by_the_database_ends_the_task_as_already_decided(
    celery: ModerationCelery, sessions: sessionmaker[Session], active_model: TrainedModel, batch: int
) -> None:
    """The partial unique index on decisions(comment_id) WHERE is_current is the last guard against two
    workers deciding one comment. The race itself cannot be timed from a test (the row lock makes a second
    worker skip or wait), so the comment here already has a current decision that the task does not read
    as the latest (a newer, retired one follows it): the task's insert meets the index just as a racing
    worker's would. The task ends quietly, with the one decision there was, nothing half-written."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    with sessions.begin() as session:
        create_site(session, "good-site", "http://127.0.0.1:9/moderation-callback")
    comment_id = post_comment(sessions, "good-site", "c-1", "ana@example.org", "198.51.100.2", now)
    with sessions.begin() as session:
        other = Decision(comment_id=comment_id, outcome="hold", is_current=True, reasons=[], created_at=now)
        session.add(other)
        session.flush()
        session.add(Decision(comment_id=comment_id, outcome="approve", is_current=False, reasons=[], created_at=now))
        winner = other.id
    celery.runtime.classify_batch = batch

    assert celery.tasks[CLASSIFY_TASK].run(comment_id, 0) == "already-decided"

    assert current_decisions(sessions, comment_id) == [winner]
    with sessions() as session:
        assert len(session.scalars(select(Decision.id).where(Decision.comment_id == comment_id)).all()) == 2
        assert session.scalars(select(CallbackDelivery.id)).all() == []


# --- a comment whose classification fails every time -------------------------------------------------


@contextlib.contextmanager
def listening(engine: Engine, **hooks: Callable[..., None]) -> Iterator[None]:
    """SQLAlchemy event hooks on ``engine`` (event name: function) for the length of the block."""
    for name, hook in hooks.items():
        event.listen(engine, name, hook)
    try:
        yield
    finally:
        for name, hook in hooks.items():
            event.remove(engine, name, hook)


def the_relay_publishes_again(celery: ModerationCelery, comment_id: int) -> None:
    """What beat's relay writes when it publishes the comment's waiting work again."""
    with celery.runtime.sessions.begin() as session:
        work = session.scalars(select(OutboxMessage.id).where(OutboxMessage.comment_id == comment_id)).all()
        outbox.mark_published(session, list(work), datetime.now(UTC), due_before=datetime.now(UTC) + timedelta(days=1))


def relay(celery: ModerationCelery, comment_id: int) -> str:
    """The relay publishes the work again, and its message runs as a worker runs it (without a revision)."""
    the_relay_publishes_again(celery, comment_id)
    outcome: str = celery.tasks[CLASSIFY_TASK].run(comment_id)
    return outcome


def tries(sessions: sessionmaker[Session], comment_id: int) -> list[int]:
    with sessions() as session:
        return list(session.scalars(select(OutboxMessage.tries).where(OutboxMessage.comment_id == comment_id)))


def fail_relayed_runs(celery: ModerationCelery, comment_id: int, runs: int) -> None:
    """Relayed runs a relay interval apart, each failing in the policy (see broken_site_comment)."""
    for _ in range(runs):
        with pytest.raises(ValueError, match="advice_hold must be between 0 and 1"):
            relay(celery, comment_id)


def broken_site_comment(sessions: sessionmaker[Session], callback_url: str | None = None) -> int:
    """A comment the policy refuses every time: its site's stored advice threshold is out of range."""
    with sessions.begin() as session:
        broken, _ = create_site(session, "broken-site", callback_url)
        broken.advice_hold_threshold = 1.5
    return post_comment(sessions, "broken-site", "b-1", "bad@example.org", "198.51.100.1", datetime.now(UTC))


def test_a_comment_that_fails_every_run_is_held_unscored_for_a_person_after_three_counted_runs(
    celery: ModerationCelery,
    sessions: sessionmaker[Session],
    active_model: TrainedModel,
    site_server: SiteServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without a limit the relay republished it every 30 s for ever, and the site never heard of it."""
    bad = broken_site_comment(sessions, site_server.url)
    with pytest.raises(ValueError, match="advice_hold must be between 0 and 1"):
        celery.tasks[CLASSIFY_TASK].run(bad, 0)  # intake's message, its batch of one failed: counted once
    assert tries(sessions, bad) == [1]
    for counted in (2, 3):
        with pytest.raises(ValueError, match="advice_hold must be between 0 and 1"):
            relay(celery, bad)
        assert tries(sessions, bad) == [counted]
        assert (comment_status(sessions, bad), current_decisions(sessions, bad)) == ("pending", [])

    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="workers.tasks"):
        assert relay(celery, bad) == "hold"
    assert [r.message for r in caplog.records] == [
        "classifying the comment failed on 3 counted runs; held for a person, unscored"
    ]
    assert comment_status(sessions, bad) == "held"
    with sessions() as session:
        decision = session.scalars(select(Decision).where(Decision.comment_id == bad)).one()
        assert (decision.is_current, decision.outcome, decision.reasons) == (True, "hold", ["not_classified"])
        assert (decision.spam_score, decision.advice_score, decision.explanation) == (None, None, {})
        assert (decision.decided_by, decision.model_version) == ("model", active_model.version)
        assert session.scalars(select(OutboxMessage)).all() == []  # nothing left for the relay to send again
        delivery = session.scalars(select(CallbackDelivery)).one()
    assert (delivery.decision_id, delivery.status) == (decision.id, DeliveryStatus.PENDING)
    assert (delivery.payload["data"]["status"], delivery.payload["data"]["reasons"]) == ("held", ["not_classified"])
    assert delivery.payload["data"]["scores"] == {"spam": None, "medical_advice": None}

    assert relay(celery, bad) == "skipped"  # a relayed message still on its way finds it settled
    with sessions() as session:
        assert len(session.scalars(select(Decision.id).where(Decision.comment_id == bad)).all()) == 1


def test_a_relayed_run_is_counted_before_it_starts_so_a_run_that_kills_its_worker_counts_too(
    celery: ModerationCelery, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """A regex or a model stuck in C code ignores the soft time limit, and the hard one kills the process: no
    error is left to count. So the count is committed before the run, as another connection sees it."""
    bad = broken_site_comment(sessions)
    engine = celery.runtime.sessions.kw["bind"]
    seen_during_the_run: list[list[int]] = []

    def look_from_outside(conn: object, cursor: object, statement: str, *args: object) -> None:
        # The run's first read of its comments (with their sites), after the count's own transaction
        if "JOIN sites" in statement and not seen_during_the_run:
            with sessions() as outside:  # another connection sees only what is committed; on SQLite, a snapshot
                outside.connection(execution_options={SQLITE_BEGIN: "DEFERRED"})
                work = select(OutboxMessage.tries).where(OutboxMessage.comment_id == bad)
                seen_during_the_run.append(list(outside.scalars(work)))

    with (
        listening(engine, before_cursor_execute=look_from_outside),
        pytest.raises(ValueError, match="advice_hold must be between 0 and 1"),
    ):
        relay(celery, bad)
    assert seen_during_the_run == [[1]]


def test_relayed_copies_of_a_comment_decided_already_find_it_settled(
    celery: ModerationCelery, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """A backlog gets work relayed again and again: each message after the first finds the work done, and the
    first, counted once, is far from a hold."""
    with sessions.begin() as session:
        create_site(session, "good-site")
    comment_id = post_comment(sessions, "good-site", "c-1", "ana@example.org", "198.51.100.2", datetime.now(UTC))
    assert relay(celery, comment_id) in {"approve", "hold", "reject"}
    for _ in range(5):
        assert relay(celery, comment_id) == "skipped"
    assert len(current_decisions(sessions, comment_id)) == 1
    with sessions() as session:
        reasons = session.scalars(select(Decision.reasons).where(Decision.comment_id == comment_id)).one()
    assert "not_classified" not in reasons


def test_an_edit_gives_the_new_text_its_own_tries(
    celery: ModerationCelery, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    bad = broken_site_comment(sessions)
    fail_relayed_runs(celery, bad, TRIES_BEFORE_HOLDING)
    assert tries(sessions, bad) == [3]
    with sessions.begin() as session:
        site = require_site(session, "broken-site")
        new = NewComment(external_id="b-1", article_id="massage-therapy", body="Edited: stretching helped me.")
        assert apply_update(session, site, "wh-edit", new, datetime.now(UTC)).queued
    assert tries(sessions, bad) == [0]  # the same outbox row, its count started again
    with pytest.raises(ValueError, match="advice_hold must be between 0 and 1"):
        relay(celery, bad)
    assert (comment_status(sessions, bad), tries(sessions, bad)) == ("pending", [1])


def test_copies_of_a_relayed_run_and_retries_of_its_task_are_not_counted_as_runs(
    celery: ModerationCelery, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """One run per publish by the relay counts: copies of one publish (redelivered, or waiting in a long
    queue) run after it, and a task retried after a database error is the same run again."""
    bad = broken_site_comment(sessions)
    task = celery.tasks[CLASSIFY_TASK]
    the_relay_publishes_again(celery, bad)
    for _ in range(5):  # one publish's message run five times: one run counted
        with pytest.raises(ValueError, match="advice_hold must be between 0 and 1"):
            task.run(bad)
    assert tries(sessions, bad) == [1]
    the_relay_publishes_again(celery, bad)
    with pytest.raises(ValueError, match="advice_hold must be between 0 and 1"):
        task.apply(args=(bad,), retries=1, throw=True)  # as Celery runs an autoretry of a message
    assert tries(sessions, bad) == [1]
    with pytest.raises(ValueError, match="advice_hold must be between 0 and 1"):
        task.run(bad)  # the new publish's own message
    assert tries(sessions, bad) == [2]


def test_a_relayed_copy_that_finds_its_comment_held_by_a_run_in_progress_is_not_counted(
    celery: ModerationCelery, engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """A run stuck for a minute and a half keeps its batch's comments locked while the relay publishes them
    again: their copies find nothing failed, and must not count towards holding healthy comments unscored."""
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks: on SQLite a run in progress holds the whole database's write lock")
    with sessions.begin() as session:
        create_site(session, "good-site")
    comment_id = post_comment(sessions, "good-site", "c-1", "ana@example.org", "198.51.100.2", datetime.now(UTC))
    with sessions() as stuck:
        stuck.scalars(select(Comment).where(Comment.id == comment_id).with_for_update()).all()
        for _ in range(TRIES_BEFORE_HOLDING + 2):
            assert relay(celery, comment_id) == "skipped"
        assert tries(sessions, comment_id) == [0]
        stuck.rollback()  # its worker killed
    assert relay(celery, comment_id) in {"approve", "hold", "reject"}
    assert "not_classified" not in str(current_decision_reasons(sessions, comment_id))


def current_decision_reasons(sessions: sessionmaker[Session], comment_id: int) -> list[str]:
    with sessions() as session:
        return list(
            session.scalars(
                select(Decision.reasons).where(Decision.comment_id == comment_id, Decision.is_current)
            ).one()
        )


def test_an_edit_committed_after_the_count_passed_the_limit_is_classified_not_held(
    celery: ModerationCelery, engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """The count is read again under the comment's lock: an edit committed between counting and locking (just
    before the lock is taken) reset it, and the new text is classified."""
    if engine.dialect.name != "postgresql":
        pytest.skip("on SQLite the hold's transaction holds the write lock from its start: no edit can come between")
    bad = broken_site_comment(sessions)
    fail_relayed_runs(celery, bad, TRIES_BEFORE_HOLDING)
    the_relay_publishes_again(celery, bad)
    with celery.runtime.sessions.begin() as session:  # the fourth run counts...
        assert note_relayed_try(session, bad) == (4, True)
    edited: list[bool] = []

    def edit_just_before_the_lock(conn: object, cursor: object, statement: str, *args: object) -> None:
        if " FOR NO KEY UPDATE" in statement and not edited:
            edited.append(True)
            with sessions.begin() as session:  # another connection, committed before the lock is asked for
                site = require_site(session, "broken-site")
                new = NewComment(external_id="b-1", article_id="massage-therapy", body="Edited: stretching helped.")
                assert apply_update(session, site, "wh-edit", new, datetime.now(UTC)).queued

    holding = create_db_engine(engine.url.render_as_string(hide_password=False))
    try:
        with (
            listening(holding, before_cursor_execute=edit_just_before_the_lock),
            Session(holding) as session,
            session.begin(),
        ):
            assert hold_unclassified(session, bad, active_model.version, datetime.now(UTC)) is None
    finally:
        holding.dispose()
    assert edited == [True]
    assert (comment_status(sessions, bad), current_decisions(sessions, bad), tries(sessions, bad)) == (
        "pending",
        [],
        [0],
    )


def test_once_the_cause_is_fixed_comments_held_unclassified_are_sent_back_and_decided(
    celery: ModerationCelery, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    bad = broken_site_comment(sessions)
    fail_relayed_runs(celery, bad, TRIES_BEFORE_HOLDING)
    assert relay(celery, bad) == "hold"
    judged = post_comment(sessions, "broken-site", "b-2", "ok@example.org", "198.51.100.9", datetime.now(UTC))
    undone = post_comment(sessions, "broken-site", "b-3", "un@example.org", "198.51.100.8", datetime.now(UTC))
    with sessions.begin() as session:
        now = datetime.now(UTC)
        by = "moderator:m@example.org"
        unscored = {"outcome": "hold", "reasons": ["not_classified"], "created_at": now}
        session.add_all(
            [  # held unclassified too, then a moderator approved it: that stands
                Decision(comment_id=judged, is_current=False, **unscored),
                Decision(comment_id=judged, outcome="approve", is_current=True, decided_by=by),
                # approved, then the moderator's undo put the hold back, in the moderator's name: still unjudged
                Decision(comment_id=undone, is_current=False, **unscored),
                Decision(comment_id=undone, outcome="approve", is_current=False, decided_by=by),
                Decision(comment_id=undone, is_current=True, decided_by=by, **unscored),
            ]
        )
        session.get_one(Comment, judged).status = "approved"
        session.get_one(Comment, undone).status = "held"
        session.execute(delete(OutboxMessage).where(OutboxMessage.comment_id.in_([judged, undone])))
    with sessions.begin() as session:
        require_site(session, "broken-site").advice_hold_threshold = None  # the cause, fixed

    with sessions.begin() as session:
        assert send_back_unclassified(session, datetime.now(UTC)) == [bad, undone]
    assert (comment_status(sessions, bad), current_decisions(sessions, bad), tries(sessions, bad)) == (
        "pending",
        [],
        [0],
    )
    with sessions() as session:  # as work the relay sent before: no other comment's batch takes it
        assert session.scalars(select(OutboxMessage.attempts).where(OutboxMessage.comment_id == bad)).one() == 1
    assert relay(celery, bad) in {"approve", "hold", "reject"}  # the relay sends its work; decided this time
    with sessions() as session:
        decisions = session.scalars(select(Decision).where(Decision.comment_id == bad).order_by(Decision.id)).all()
    assert [(d.is_current, d.reasons == ["not_classified"]) for d in decisions] == [(False, True), (True, False)]
    assert decisions[-1].spam_score is not None and decisions[-1].advice_score is not None
    assert relay(celery, undone) in {"approve", "hold", "reject"}
    with sessions.begin() as session:
        assert send_back_unclassified(session, datetime.now(UTC)) == []  # nothing left to send back
    assert (comment_status(sessions, judged), len(current_decisions(sessions, judged))) == ("approved", 1)


def test_a_hold_without_scores_refused_by_the_unique_index_ends_the_task_as_already_decided(
    celery: ModerationCelery, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """As for a scored decision (above): the index is the last guard, and the task ends quietly."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    with sessions.begin() as session:
        create_site(session, "good-site")
    comment_id = post_comment(sessions, "good-site", "c-1", "ana@example.org", "198.51.100.2", now)
    with sessions.begin() as session:
        other = Decision(comment_id=comment_id, outcome="approve", is_current=True, reasons=[], created_at=now)
        session.add(other)
        session.flush()
        session.add(Decision(comment_id=comment_id, outcome="hold", is_current=False, reasons=[], created_at=now))
        for work in session.scalars(select(OutboxMessage).where(OutboxMessage.comment_id == comment_id)):
            work.tries = TRIES_BEFORE_HOLDING
        winner = other.id

    assert relay(celery, comment_id) == "already-decided"
    assert current_decisions(sessions, comment_id) == [winner]


def test_a_message_delivered_again_after_its_worker_was_lost_is_counted_and_runs_alone(
    celery: ModerationCelery,
    sessions: sessionmaker[Session],
    active_model: TrainedModel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A crash (out of memory, a segfault) puts intake's message straight back on the queue, flagged as
    redelivered, with no publish by the relay: each such run counts, and it takes no batch-mates down."""
    bad = broken_site_comment(sessions)
    with sessions.begin() as session:
        create_site(session, "good-site")
    healthy = post_comment(sessions, "good-site", "c-1", "ok@example.org", "198.51.100.7", datetime.now(UTC))
    task = celery.tasks[CLASSIFY_TASK]
    with caplog.at_level(logging.WARNING, logger="workers.tasks"):
        for counted in range(1, TRIES_BEFORE_HOLDING + 1):
            with pytest.raises(ValueError, match="advice_hold must be between 0 and 1"):
                run_delivered_again(task, bad)
            assert tries(sessions, bad) == [counted]
    # In a batch the waiting healthy comment would have joined, the batch would have failed first, and said so.
    assert [r.message for r in caplog.records if r.name == "workers.tasks"] == []
    assert comment_status(sessions, healthy) == "pending"
    assert run_delivered_again(task, bad) == "hold"
    assert current_decision_reasons(sessions, bad) == ["not_classified"]


def run_delivered_again(task: Task, comment_id: int, retries: int = 0) -> object:
    """One run of the classify message for ``comment_id`` as a worker gets it back after the one running it
    was lost (``retries``: how often it had been retried before)."""
    task.push_request(delivery_info={"redelivered": True}, retries=retries)
    try:
        return task.run(comment_id, 0)
    finally:
        task.pop_request()


def test_a_retried_message_delivered_again_after_its_worker_was_lost_is_counted(
    celery: ModerationCelery, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """A message retried once (a database error's autoretry, the wait for a model) keeps ``retries >= 1``;
    a run of it that then loses its worker comes back redelivered, and is a run of its own all the same:
    counted, and past the limit the comment is held, or it would take a worker down on every delivery."""
    bad = broken_site_comment(sessions)
    task = celery.tasks[CLASSIFY_TASK]
    for counted in range(1, TRIES_BEFORE_HOLDING + 1):
        with pytest.raises(ValueError, match="advice_hold must be between 0 and 1"):
            run_delivered_again(task, bad, retries=1)
        assert tries(sessions, bad) == [counted]
    assert run_delivered_again(task, bad, retries=1) == "hold"
    assert current_decision_reasons(sessions, bad) == ["not_classified"]


def test_deliveries_a_warm_shutdown_puts_back_while_no_model_loads_count_no_run(
    celery: ModerationCelery, engine: Engine, sessions: sessionmaker[Session], trained_model: TrainedModel
) -> None:
    """A deploy's warm shutdown puts back the messages its worker holds, among them the retries waiting for a
    model, flagged redelivered as a message whose worker was lost is (kombu's Redis transport flags both; a
    retry of one is not flagged again). A reviewer's worry: several deploys during a model outage could count
    as runs and hold a comment as not_classified early. The task is put off before any run is counted, so they
    count none, and the comment's first runs once a model loads are counted as ever: one per run, failed or not,
    held only past TRIES_BEFORE_HOLDING of them."""
    healthy = an_io_comment(sessions)
    bad = broken_site_comment(sessions)
    task = celery.tasks[CLASSIFY_TASK]
    for put_back in range(1, 2 * TRIES_BEFORE_HOLDING + 1):  # each delivery's retry is put back by a deploy
        for comment_id in (healthy, bad):
            with pytest.raises(Retry):
                run_delivered_again(task, comment_id, retries=put_back)
    assert tries(sessions, healthy) == [0] and tries(sessions, bad) == [0]

    with sessions.begin() as session:  # the model loads again
        registry.register(session, trained_model.version, trained_model.artifact, trained_model.model.card)
        registry.activate(session, trained_model.version)
    retries = 2 * TRIES_BEFORE_HOLDING + 1
    assert run_delivered_again(task, healthy, retries=retries) == "approve"  # classified, not held
    for counted in range(1, TRIES_BEFORE_HOLDING + 1):  # runs that do fail still count, one each
        with pytest.raises(ValueError, match="advice_hold must be between 0 and 1"):
            run_delivered_again(task, bad, retries=retries)
        assert tries(sessions, bad) == [counted]
    assert run_delivered_again(task, bad, retries=retries) == "hold"
    assert current_decision_reasons(sessions, bad) == ["not_classified"]


def test_a_relayed_run_the_database_failed_takes_its_count_back(
    celery: ModerationCelery, engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """A lock or statement timeout is no failure of the comment: a database incident lasting a few relay
    rounds must not hold healthy comments unscored."""
    if engine.dialect.name != "postgresql":
        pytest.skip("a lock timeout: SQLite has none to set")
    with sessions.begin() as session:
        create_site(session, "good-site")
    comment_id = post_comment(sessions, "good-site", "c-1", "ana@example.org", "198.51.100.2", datetime.now(UTC))
    blocker = sessions()
    locked: list[bool] = []

    def time_out_on_the_outbox(conn: object, cursor: Any, statement: str, *args: object) -> None:
        if "JOIN sites" in statement and not locked:  # the decision's transaction has begun: lock its work
            locked.append(True)
            blocker.scalars(select(OutboxMessage).where(OutboxMessage.comment_id == comment_id).with_for_update()).all()
        if statement.lstrip().startswith("DELETE FROM outbox"):
            cursor.execute("SET LOCAL lock_timeout = '200ms'")

    def let_go_once_it_timed_out(context: object) -> None:
        blocker.rollback()  # the incident is over by the time the count is taken back

    hooks = listening(
        celery.runtime.sessions.kw["bind"],
        before_cursor_execute=time_out_on_the_outbox,
        handle_error=let_go_once_it_timed_out,
    )
    try:
        with hooks, pytest.raises(OperationalError, match="lock timeout"):
            relay(celery, comment_id)
    finally:
        blocker.rollback()
        blocker.close()
    assert (comment_status(sessions, comment_id), tries(sessions, comment_id)) == ("pending", [0])
    assert relay(celery, comment_id) in {"approve", "hold", "reject"}


def test_a_run_that_counted_nothing_takes_nothing_back_when_the_database_fails_it(
    celery: ModerationCelery,
    sessions: sessionmaker[Session],
    active_model: TrainedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second copy of a publish already counted adds no run; if the database then fails it, the count
    another run added stays."""
    comment_id = broken_site_comment(sessions)
    fail_relayed_runs(celery, comment_id, 2)
    assert tries(sessions, comment_id) == [2]

    def database_blip(*args: object, **kwargs: object) -> list[object]:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(tasks_module, "decide_waiting", database_blip)
    with pytest.raises(OperationalError):
        celery.tasks[CLASSIFY_TASK].run(comment_id)  # the same publish again: nothing counted

    assert tries(sessions, comment_id) == [2]


def test_a_batch_out_of_time_ends_its_task_and_counts_nothing_against_its_comments(
    celery: ModerationCelery,
    sessions: sessionmaker[Session],
    active_model: TrainedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The soft time limit is raised inside the scoring: it is no failure of a comment. Taken for one, it made
    the task decide the batch one at a time after its time was up, and count a healthy comment as failing."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    with sessions.begin() as session:
        create_site(session, "good-site")
    ids = [
        post_comment(sessions, "good-site", f"c-{n}", f"p{n}@example.org", f"198.51.100.{20 + n}", now)
        for n in range(3)
    ]

    def out_of_time(*args: object, **kwargs: object) -> list[object]:
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(type(active_model.model), "score_and_explain_many", out_of_time)
    with pytest.raises(SoftTimeLimitExceeded):
        celery.tasks[CLASSIFY_TASK].run(ids[0], 0)
    assert [comment_status(sessions, c) for c in ids] == ["pending"] * 3
    assert [tries(sessions, c) for c in ids] == [[0], [0], [0]]
