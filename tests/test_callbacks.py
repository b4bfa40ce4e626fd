"""Decision callbacks: retry schedule, leases, dead letters and 410s in the database; signed POSTs to a
real local HTTP server playing the site."""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import Any

import httpcore
import httpx
import pytest
from sqlalchemy import Engine, String, cast, create_engine, func, insert, literal, select, text
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError as StandardVerificationError
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError

from models.db import make_session_factory
from models.entities import CallbackDelivery, Comment, Decision, DeliveryStatus, Site, SiteSecret
from models.migrate import downgrade_database, upgrade_database
from moderation import callbacks
from moderation.callbacks import COMMENT_DECIDED
from moderation.sites import (
    CallbackAddressRefusedError,
    callback_addresses,
    create_site,
    rotate_secret,
    signing_secrets,
)
from server.logs import configure_logging
from tests.support.callbacks import NOW, POLICY, decided_comment
from tests.support.migrations import column_names, drift_from_the_models
from tests.support.services import free_port
from tests.support.signing import sign_from_spec
from tests.support.site_server import Received, SiteServer, always
from tests.support.statements import statements_run
from workers.app import ModerationCelery
from workers.delivery import MAX_ANSWER_BYTES, callback_client, parse_retry_after, post_callback
from workers.tasks import PAUSE_CHECK_SECONDS, notify_site

# --- the retry schedule --------------------------------------------------------------------------


@pytest.mark.parametrize("attempts", [1, 2, 3, 5, 8])
def test_delay_grows_exponentially_within_equal_jitter_bounds(attempts: int) -> None:
    rng = random.Random(0)
    delays = [POLICY.delay(attempts, rng=rng) for _ in range(400)]
    full = min(3600.0, 30.0 * 2 ** (attempts - 1))
    assert full / 2 <= min(delays) and max(delays) <= full
    assert max(delays) - min(delays) > full / 3  # really jittered, not a fixed step


def test_delay_doubles_per_attempt_until_the_cap() -> None:
    rng = random.Random(0)
    averages = [sum(POLICY.delay(n, rng=rng) for _ in range(300)) / 300 for n in range(1, 10)]
    for before, after in itertools.pairwise(averages[:7]):
        assert 1.7 < after / before < 2.3
    assert all(1800 <= a <= 3600 for a in averages[7:])
    assert all(1800 <= POLICY.delay(n, rng=rng) <= 3600 for n in (20, 60))


def test_delay_is_never_sooner_than_retry_after() -> None:
    rng = random.Random(0)
    assert all(POLICY.delay(1, retry_after=500, rng=rng) >= 500 for _ in range(50))
    # A short Retry-After does not shorten the backoff.
    assert all(POLICY.delay(4, retry_after=1, rng=rng) >= 120 for _ in range(50))


def test_retry_after_beyond_the_cap_waits_the_cap() -> None:
    assert POLICY.delay(1, retry_after=10 * 86400, rng=random.Random(0)) == 3600


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Thu, 26 Nov 2026 10:05:00 GMT", 300.0),
        ("Thu, 26 Nov 2026 09:00:00 GMT", 0.0),  # a date in the past: no extra wait
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after_reads_both_forms(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


# --- deliveries in the database ------------------------------------------------------------------


@pytest.fixture
def delivery_id(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        site, _ = create_site(session, "backpain-advisor", "https://site.example/callback")
        delivery = decided_comment(session, site, "c-1")
        assert delivery is not None
        return delivery.id


def claim(sessions: sessionmaker[Session], delivery_id: int, now: datetime) -> CallbackDelivery | None:
    with sessions.begin() as session:
        return callbacks.claim_delivery(session, delivery_id, now, POLICY)


def fail(
    sessions: sessionmaker[Session],
    delivery_id: int,
    now: datetime,
    status_code: int | None = 500,
    retry_after: float | None = None,
    error: str = "boom",
) -> None:
    with sessions.begin() as session:
        delivery = session.get_one(CallbackDelivery, delivery_id)
        callbacks.record_failed(
            session, delivery, status_code=status_code, error=error, retry_after=retry_after, now=now, policy=POLICY
        )


def load(sessions: sessionmaker[Session], delivery_id: int) -> CallbackDelivery:
    with sessions() as session:
        return session.get_one(CallbackDelivery, delivery_id)


def test_schedule_callback_builds_the_event_payload(sessions: sessionmaker[Session], delivery_id: int) -> None:
    delivery = load(sessions, delivery_id)
    assert delivery.status == DeliveryStatus.PENDING and delivery.message_id.startswith("msg_")
    assert delivery.payload["type"] == COMMENT_DECIDED
    assert delivery.payload["data"] | {"id": 0} == {
        "id": 0,
        "comment_id": "c-1",
        "site": "backpain-advisor",
        "article_id": "a",
        "status": "approved",
        "decision": "approve",
        "reasons": [],
        "scores": {"spam": None, "medical_advice": None},
        "decided_by": "model",
        "model_version": None,
        "decided_at": NOW.isoformat(),
    }


def test_no_callback_for_a_site_without_url(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        site, _ = create_site(session, "quiet-site")
        assert decided_comment(session, site, "c-1") is None


def test_a_delivery_is_leased_once_until_the_lease_expires(sessions: sessionmaker[Session], delivery_id: int) -> None:
    claimed = claim(sessions, delivery_id, NOW)
    assert claimed is not None and claimed.status == DeliveryStatus.SENDING
    assert claimed.lease_until == NOW + timedelta(seconds=60)

    assert claim(sessions, delivery_id, NOW) is None
    assert claim(sessions, delivery_id, NOW + timedelta(seconds=59)) is None
    with sessions() as session:
        assert callbacks.due_deliveries(session, NOW + timedelta(seconds=59)) == []
        assert callbacks.due_deliveries(session, NOW + timedelta(seconds=61)) == [delivery_id]
    again = claim(sessions, delivery_id, NOW + timedelta(seconds=61))  # the first worker died
    assert again is not None and again.lease_until == NOW + timedelta(seconds=121)


def test_deliveries_due_at_the_same_moment_come_oldest_first(sessions: sessionmaker[Session]) -> None:
    """Handing back a batch makes all its deliveries due at one moment. Claiming and handing back the older
    row moves it behind the newer one in PostgreSQL's index (a new row version), so without a tie-break it
    came last."""
    with sessions.begin() as session:
        site, _ = create_site(session, "tied-site", "https://site.example/callback")
        older, newer = (decided_comment(session, site, f"c-{n}") for n in (1, 2))
        assert older is not None and newer is not None
        ids = [older.id, newer.id]
    with sessions.begin() as session:
        for status in (DeliveryStatus.SENDING, DeliveryStatus.PENDING):
            session.execute(
                text("UPDATE callback_deliveries SET status = :status WHERE id = :id"), {"status": status, "id": ids[0]}
            )

    with sessions() as session:
        assert callbacks.due_deliveries(session, NOW) == ids


def test_a_late_result_does_not_overwrite_a_later_claims(sessions: sessionmaker[Session], delivery_id: int) -> None:
    """A batch ran past its lease: another task claimed the delivery again and delivered it meanwhile."""
    first = claim(sessions, delivery_id, NOW)
    assert first is not None and first.lease_until is not None
    second = claim(sessions, delivery_id, NOW + timedelta(seconds=61))
    assert second is not None and second.lease_until is not None
    delivered = callbacks.AttemptOutcome(delivery_id, 204, True)
    timed_out = callbacks.AttemptOutcome(delivery_id, None, False, "ReadTimeout")
    with sessions.begin() as session:
        later = NOW + timedelta(seconds=62)
        assert callbacks.record_attempts(session, [delivered], later, POLICY, lease=second.lease_until) == {
            delivery_id: DeliveryStatus.DELIVERED
        }
    with sessions.begin() as session:
        late = callbacks.record_attempts(session, [timed_out], NOW + timedelta(seconds=70), POLICY, first.lease_until)
    assert late == {delivery_id: None}
    delivery = load(sessions, delivery_id)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (DeliveryStatus.DELIVERED, 1, 204)


def test_claimed_deliveries_not_sent_are_given_back(sessions: sessionmaker[Session], delivery_id: int) -> None:
    claimed = claim(sessions, delivery_id, NOW)
    assert claimed is not None
    with sessions.begin() as session:
        callbacks.end_lease(session, [delivery_id], NOW, NOW)  # not this claim's lease: nothing changes
    assert load(sessions, delivery_id).status == DeliveryStatus.SENDING
    with sessions.begin() as session:
        callbacks.end_lease(session, [delivery_id], claimed.lease_until, NOW + timedelta(seconds=5))
    delivery = load(sessions, delivery_id)
    assert (delivery.status, delivery.lease_until, delivery.attempts) == (DeliveryStatus.PENDING, None, 0)
    assert claim(sessions, delivery_id, NOW + timedelta(seconds=5)) is not None  # due again at once
    with sessions.begin() as session:
        callbacks.end_lease(session, [delivery_id], load(sessions, delivery_id).lease_until, NOW, "no callback URL")
    assert (load(sessions, delivery_id).status, load(sessions, delivery_id).last_error) == (
        "disabled",
        "no callback URL",
    )  # held back, not a dead letter: a URL saved again sends it


def test_a_delivery_not_yet_due_cannot_be_claimed(sessions: sessionmaker[Session], delivery_id: int) -> None:
    assert claim(sessions, delivery_id, NOW - timedelta(seconds=1)) is None
    assert claim(sessions, delivery_id + 1000, NOW) is None


def test_a_failure_schedules_the_next_attempt(sessions: sessionmaker[Session], delivery_id: int) -> None:
    claim(sessions, delivery_id, NOW)
    fail(sessions, delivery_id, NOW, status_code=500)
    delivery = load(sessions, delivery_id)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (DeliveryStatus.PENDING, 1, 500)
    assert delivery.last_error == "boom" and delivery.lease_until is None
    assert NOW + timedelta(seconds=15) <= delivery.next_attempt_at <= NOW + timedelta(seconds=30)
    assert claim(sessions, delivery_id, NOW + timedelta(seconds=14)) is None

    later = NOW + timedelta(seconds=31)
    assert claim(sessions, delivery_id, later) is not None
    fail(sessions, delivery_id, later, status_code=429, retry_after=900)
    delivery = load(sessions, delivery_id)
    assert delivery.attempts == 2 and delivery.next_attempt_at >= later + timedelta(seconds=900)


def test_the_last_failure_is_a_dead_letter(sessions: sessionmaker[Session], delivery_id: int) -> None:
    now = NOW
    for attempt in range(1, POLICY.max_attempts + 1):
        assert claim(sessions, delivery_id, now) is not None, attempt
        fail(sessions, delivery_id, now, status_code=None)
        now += timedelta(hours=2)
    delivery = load(sessions, delivery_id)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DEAD, POLICY.max_attempts)
    assert claim(sessions, delivery_id, now + timedelta(days=30)) is None
    with sessions() as session:
        assert callbacks.due_deliveries(session, now + timedelta(days=30)) == []


def test_a_success_is_recorded(sessions: sessionmaker[Session], delivery_id: int) -> None:
    claim(sessions, delivery_id, NOW)
    with sessions.begin() as session:
        callbacks.record_delivered(session.get_one(CallbackDelivery, delivery_id), 204, NOW)
    delivery = load(sessions, delivery_id)
    assert (delivery.status, delivery.attempts, delivery.delivered_at) == (DeliveryStatus.DELIVERED, 1, NOW)
    assert claim(sessions, delivery_id, NOW + timedelta(days=1)) is None


def test_410_disables_the_site_and_its_pending_deliveries(sessions: sessionmaker[Session], delivery_id: int) -> None:
    with sessions.begin() as session:
        site = session.scalars(select(Site).where(Site.name == "backpain-advisor")).one()
        sibling = decided_comment(session, site, "c-2")
        other_site, _ = create_site(session, "other-site", "https://other.example/cb")
        elsewhere = decided_comment(session, other_site, "c-1")
        assert sibling is not None and elsewhere is not None
        ids = {"sibling": sibling.id, "elsewhere": elsewhere.id, "site": site.id}

    claim(sessions, delivery_id, NOW)
    fail(sessions, delivery_id, NOW, status_code=410)

    with sessions() as session:
        assert session.get_one(Site, ids["site"]).callback_disabled_at == NOW
        assert session.get_one(CallbackDelivery, delivery_id).status == DeliveryStatus.DISABLED
        assert session.get_one(CallbackDelivery, ids["sibling"]).status == DeliveryStatus.DISABLED
        assert session.get_one(CallbackDelivery, ids["elsewhere"]).status == DeliveryStatus.PENDING
        assert callbacks.due_deliveries(session, NOW + timedelta(days=1)) == [ids["elsewhere"]]
    with sessions.begin() as session:  # later decisions for the disabled site are not sent either
        later = decided_comment(session, session.get_one(Site, ids["site"]), "c-3")
        assert later is not None and later.status == DeliveryStatus.DISABLED


@pytest.mark.parametrize(
    ("url_now", "disabled"),
    [
        ("https://site.example/callback", True),  # the address it went to said Gone: off
        ("https://new.example/callback", False),  # replaced while on the wire: try the new one
        (None, True),  # cleared while on the wire: off, as a 410 with no URL to go to
    ],
)
def test_a_410_turns_callbacks_off_only_when_it_came_from_the_sites_current_url(
    sessions: sessionmaker[Session], delivery_id: int, url_now: str | None, disabled: bool
) -> None:
    claimed = claim(sessions, delivery_id, NOW)
    assert claimed is not None
    with sessions.begin() as session:  # an admin saves another URL while the POST is on the wire
        session.scalars(select(Site)).one().callback_url = url_now
    gone = callbacks.AttemptOutcome(delivery_id, 410, False, "Gone", url="https://site.example/callback")
    with sessions.begin() as session:
        status = callbacks.record_attempts(session, [gone], NOW, POLICY, lease=claimed.lease_until)[delivery_id]

    with sessions() as session:
        site_disabled_at = session.scalars(select(Site.callback_disabled_at)).one()
        delivery = session.get_one(CallbackDelivery, delivery_id)
    if disabled:
        assert (status, site_disabled_at) == (DeliveryStatus.DISABLED, NOW)
    else:
        assert (status, site_disabled_at) == (DeliveryStatus.PENDING, None)
        assert (delivery.attempts, delivery.last_status_code, delivery.next_attempt_at) == (0, 410, NOW)
    assert delivery.status == status


def test_replay_re_enables_the_site_and_sends_again(sessions: sessionmaker[Session], delivery_id: int) -> None:
    claim(sessions, delivery_id, NOW)
    fail(sessions, delivery_id, NOW, status_code=410)
    later = NOW + timedelta(hours=1)
    with sessions.begin() as session:
        replayed = callbacks.replay(session, delivery_id, later)
        assert (replayed.status, replayed.attempts, replayed.next_attempt_at) == (DeliveryStatus.PENDING, 0, later)
    with sessions() as session:
        assert session.scalars(select(Site.callback_disabled_at)).one() is None
    assert claim(sessions, delivery_id, later) is not None
    with sessions.begin() as session, pytest.raises(LookupError):
        callbacks.replay(session, delivery_id + 1000, later)


def test_replay_releases_every_held_back_delivery_of_the_site(
    sessions: sessionmaker[Session], delivery_id: int
) -> None:
    claim(sessions, delivery_id, NOW)
    fail(sessions, delivery_id, NOW, status_code=410)
    with sessions.begin() as session:  # decided after the 410: held back from the start
        held_back = decided_comment(session, session.scalars(select(Site)).one(), "c-2", NOW + timedelta(minutes=1))
        assert held_back is not None and held_back.status == DeliveryStatus.DISABLED
        held_back_id = held_back.id
    later = NOW + timedelta(hours=1)
    with sessions.begin() as session:
        callbacks.replay(session, delivery_id, later)
    with sessions() as session:
        assert sorted(callbacks.due_deliveries(session, later)) == [delivery_id, held_back_id]


def test_replay_releases_deliveries_held_back_behind_a_site_already_enabled(
    sessions: sessionmaker[Session], delivery_id: int
) -> None:
    """Deliveries held back for a site that is on again (re-enabled by an older version, which released
    nothing) go out with the next replay of any of its callbacks, not only while the site is disabled."""
    claim(sessions, delivery_id, NOW)
    fail(sessions, delivery_id, NOW, status_code=410)
    with sessions.begin() as session:
        site = session.scalars(select(Site)).one()
        held_back = decided_comment(session, site, "c-2", NOW + timedelta(minutes=1))
        assert held_back is not None and held_back.status == DeliveryStatus.DISABLED
        held_back_id = held_back.id
        site.callback_disabled_at = None
    later = NOW + timedelta(hours=1)
    with sessions.begin() as session:
        callbacks.replay(session, delivery_id, later)
    with sessions() as session:
        assert session.get_one(CallbackDelivery, held_back_id).status == DeliveryStatus.PENDING
        assert sorted(callbacks.due_deliveries(session, later)) == [delivery_id, held_back_id]


def test_the_retry_loop_releases_a_delivery_held_back_after_its_site_was_enabled(
    sessions: sessionmaker[Session], delivery_id: int
) -> None:
    """A decision that read the site while disabled commits its delivery held back after the re-enable."""
    claim(sessions, delivery_id, NOW)
    fail(sessions, delivery_id, NOW, status_code=410)
    with sessions.begin() as session:
        site = session.scalars(select(Site)).one()
        callbacks.enable_callbacks(session, site, NOW + timedelta(minutes=1))
    with sessions.begin() as session:  # the late decision: held back, as the site looked when it read it
        site = session.scalars(select(Site)).one()
        site.callback_disabled_at = NOW
        late = decided_comment(session, site, "c-late", NOW + timedelta(minutes=2))
        assert late is not None and late.status == DeliveryStatus.DISABLED
        late_id = late.id
        site.callback_disabled_at = None
    later = NOW + timedelta(minutes=3)
    with sessions.begin() as session:
        assert callbacks.release_held_back(session, later) == 1
    with sessions() as session:
        assert session.get_one(CallbackDelivery, late_id).status == DeliveryStatus.PENDING
        assert late_id in callbacks.due_deliveries(session, later)
    with sessions.begin() as session:  # a disabled site's deliveries stay held back
        session.scalars(select(Site)).one().callback_disabled_at = later
        late_row = session.get_one(CallbackDelivery, late_id)
        late_row.status = DeliveryStatus.DISABLED
    with sessions.begin() as session:
        assert callbacks.release_held_back(session, later) == 0


def test_replay_gives_a_dead_letter_a_fresh_set_of_attempts(sessions: sessionmaker[Session], delivery_id: int) -> None:
    for _ in range(POLICY.max_attempts):
        claim(sessions, delivery_id, NOW + timedelta(days=1))
        fail(sessions, delivery_id, NOW + timedelta(days=1))
    assert load(sessions, delivery_id).status == DeliveryStatus.DEAD
    with sessions.begin() as session:
        callbacks.replay(session, delivery_id, NOW + timedelta(days=2))
    claim(sessions, delivery_id, NOW + timedelta(days=2))
    fail(sessions, delivery_id, NOW + timedelta(days=2))
    assert load(sessions, delivery_id).status == DeliveryStatus.PENDING


def pause(sessions: sessionmaker[Session], now: datetime, by: str = "admin@site.example") -> int:
    with sessions.begin() as session:
        return callbacks.pause_callbacks(session, session.scalars(select(Site)).one(), now, by)


def test_a_pause_holds_back_every_callback_until_resumed(sessions: sessionmaker[Session], delivery_id: int) -> None:
    with sessions.begin() as session:  # waiting behind the first one when the site is paused
        waiting = decided_comment(session, session.scalars(select(Site)).one(), "c-2")
        assert waiting is not None
        waiting_id = waiting.id

    assert pause(sessions, NOW) == 2
    with sessions.begin() as session:  # decided while paused: held back from the start
        later = decided_comment(session, session.scalars(select(Site)).one(), "c-3", NOW + timedelta(minutes=1))
        assert later is not None and later.status == DeliveryStatus.DISABLED
        ids = [delivery_id, waiting_id, later.id]
    with sessions() as session:
        assert callbacks.due_deliveries(session, NOW + timedelta(days=1)) == []
        assert {session.get_one(CallbackDelivery, i).status for i in ids} == {DeliveryStatus.DISABLED}
    with sessions.begin() as session:  # the retry loop leaves a paused site's callbacks alone
        assert callbacks.release_held_back(session, NOW + timedelta(days=1)) == 0

    resumed_at = NOW + timedelta(hours=2)
    with sessions.begin() as session:
        site = session.scalars(select(Site)).one()
        assert callbacks.enable_callbacks(session, site, resumed_at) == 3
        assert (site.callback_disabled_at, site.callbacks_paused_by) == (None, None)
    with sessions() as session:
        assert sorted(callbacks.due_deliveries(session, resumed_at)) == sorted(ids)
        assert {session.get_one(CallbackDelivery, i).attempts for i in ids} == {0}


def test_nothing_on_the_wire_at_a_pause_is_sent_again_before_the_resume(
    sessions: sessionmaker[Session], delivery_id: int
) -> None:
    """A callback claimed before the pause may fail or its worker die; either way it waits for the resume."""
    assert claim(sessions, delivery_id, NOW) is not None
    assert pause(sessions, NOW) == 0
    lapsed = NOW + timedelta(seconds=POLICY.lease_seconds + 1)
    assert claim(sessions, delivery_id, lapsed) is None  # its worker died: the lease lapsed
    fail(sessions, delivery_id, lapsed)  # or it came back with a 500: rescheduled
    assert claim(sessions, delivery_id, lapsed + timedelta(days=1)) is None
    with sessions.begin() as session:
        callbacks.enable_callbacks(session, session.scalars(select(Site)).one(), lapsed + timedelta(days=1))
    assert claim(sessions, delivery_id, lapsed + timedelta(days=1)) is not None


@pytest.mark.parametrize(
    ("status", "refusal"),
    [
        (DeliveryStatus.DELIVERED, "was delivered already"),
        (DeliveryStatus.SENDING, "is being sent right now"),
        (DeliveryStatus.PENDING, "is queued already"),
        (DeliveryStatus.CANCELLED, "was cancelled"),
    ],
)
def test_replay_refuses_a_callback_that_is_neither_dead_nor_held_back(
    sessions: sessionmaker[Session], delivery_id: int, status: str, refusal: str
) -> None:
    """Only dead letters and held-back callbacks are listed for replay, but a second click, a second admin's
    page loaded before the first replay or a form sent again reset any callback: a delivered one was sent to
    the site again, one on the wire a second time at once, one being retried got its attempts back."""
    with sessions.begin() as session:
        delivery = session.get_one(CallbackDelivery, delivery_id)
        delivery.status, delivery.attempts = status, 1
        if status == DeliveryStatus.SENDING:
            delivery.lease_until = NOW + timedelta(seconds=POLICY.lease_seconds)
    with sessions.begin() as session, pytest.raises(callbacks.ReplayError, match=refusal):
        callbacks.replay(session, delivery_id, NOW + timedelta(minutes=1))
    replayed = load(sessions, delivery_id)
    assert (replayed.status, replayed.attempts, replayed.next_attempt_at) == (status, 1, NOW)


def test_a_replay_during_a_pause_waits_for_the_resume(sessions: sessionmaker[Session], delivery_id: int) -> None:
    for _ in range(POLICY.max_attempts):
        claim(sessions, delivery_id, NOW + timedelta(days=1))
        fail(sessions, delivery_id, NOW + timedelta(days=1))
    pause(sessions, NOW + timedelta(days=2))
    with sessions.begin() as session:
        replayed = callbacks.replay(session, delivery_id, NOW + timedelta(days=2))
        assert (replayed.status, replayed.attempts) == (DeliveryStatus.DISABLED, 0)
    with sessions() as session:
        assert session.scalars(select(Site.callbacks_paused_by)).one() == "admin@site.example"
        assert callbacks.due_deliveries(session, NOW + timedelta(days=3)) == []


def test_a_replay_that_read_the_site_before_a_pause_does_not_undo_it(
    sessions: sessionmaker[Session], delivery_id: int
) -> None:
    """An admin replays a 410's callback while another pauses the site: the pause stands, nothing is due."""
    if sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("two writers at once are PostgreSQL's: a SQLite transaction holds the write lock throughout")
    claim(sessions, delivery_id, NOW)
    fail(sessions, delivery_id, NOW, status_code=410)
    with sessions.begin() as replaying:
        seen = replaying.scalars(select(Site)).one()  # the replay's view of the site: off after a 410
        assert seen.callbacks_paused_by is None
        pause(sessions, NOW + timedelta(minutes=1))  # the other admin's pause commits meanwhile
        replayed = callbacks.replay(replaying, delivery_id, NOW + timedelta(minutes=2))
        assert replayed.status == DeliveryStatus.DISABLED and seen.callbacks_paused_by == "admin@site.example"
    with sessions() as session:
        site = session.scalars(select(Site)).one()
        assert (site.callback_disabled_at, site.callbacks_paused_by) == (NOW, "admin@site.example")
        assert callbacks.due_deliveries(session, NOW + timedelta(days=1)) == []


def test_a_replay_while_a_worker_records_a_410_for_that_callback_is_not_a_deadlock(
    sessions: sessionmaker[Session], delivery_id: int
) -> None:
    """Lock order: the site, then its callbacks. A worker recording a 410 locked the callback's row first and then
    the site's; an admin's replay of that callback (a dead-letters page loaded before it was sent again) locks the
    site and then the callback. Between the two, PostgreSQL found a deadlock and aborted one of them. Now the worker
    locks the site first, so the one that comes second waits.

    The replay's first statement is run here by hand, so that the worker's record starts while the replay holds
    the site; the replay's own call then needs the callback's row."""
    if sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("SQLite has no row locks")
    sent = claim(sessions, delivery_id, NOW)
    assert sent is not None
    gone = callbacks.AttemptOutcome(delivery_id, 410, False, "Gone", url=sent.site.callback_url)
    outcome: dict[str, object] = {}

    def record_the_410() -> None:
        try:
            with sessions.begin() as worker:
                outcome["worker"] = callbacks.record_attempts(worker, [gone], NOW, POLICY, lease=sent.lease_until)
        except Exception as error:
            outcome["worker"] = f"error: {type(error).__name__}"

    recording = threading.Thread(target=record_the_410)
    admin = sessions()
    try:
        admin.get_one(Site, sent.site_id, with_for_update=True)  # replay's first statement
        recording.start()
        time.sleep(0.5)  # the worker waits: before, for the site, holding the callback's row
        with pytest.raises(callbacks.ReplayError, match="is being sent right now"):
            callbacks.replay(admin, delivery_id, NOW)  # the callback is on the wire, so refused; not a deadlock
        admin.rollback()
        recording.join(30)
    finally:
        admin.close()
    assert outcome == {"worker": {delivery_id: DeliveryStatus.DISABLED}}
    assert load(sessions, delivery_id).status == DeliveryStatus.DISABLED


def _copies(model: Any, of_id: int, each: Any, replaced: dict[str, Any]) -> Any:
    """INSERT ... SELECT: the row ``of_id`` of ``model``'s table copied once per row of ``each``, with the
    ``replaced`` columns' values taken from it."""
    table = model.__table__
    columns = [column for column in table.columns if column.name != "id"]
    values = [replaced.get(column.name, column) for column in columns]
    source = select(*values).select_from(table).join(each, literal(True)).where(table.c.id == of_id)
    return insert(table).from_select([column.name for column in columns], source)


def test_a_410_is_recorded_for_a_site_with_more_waiting_callbacks_than_a_statement_takes_parameters(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    """A cold review's test. Holding back a site's waiting callbacks, a 410's worker sent their ids back as one
    parameter each: past PostgreSQL's 65,535, the statement could not be sent, and the 410 was never recorded
    (the site's callbacks never turned off) just when a busy site's endpoint had been failing for hours."""
    if engine.dialect.name != "postgresql":
        pytest.skip("the limit on parameters is PostgreSQL's protocol's")
    with sessions.begin() as session:
        site, _ = create_site(session, "backpain-advisor", "https://site.example/callback")
        sent, model = decided_comment(session, site, "c-sent"), decided_comment(session, site, "c-0")
        assert sent is not None and model is not None
        sent_id, model_id, comment_id, decision_id = sent.id, model.id, model.comment_id, model.decision_id
    many = 66_000
    with engine.begin() as connection:
        n = func.generate_series(1, many).table_valued("n").alias("n")
        copied = "copy-" + cast(n.c.n, String)
        connection.execute(_copies(Comment, comment_id, n, {"external_id": copied}))
        comments = select(Comment.id, Comment.external_id).where(Comment.external_id.like("copy-%")).subquery()
        connection.execute(_copies(Decision, decision_id, comments, {"comment_id": comments.c.id}))
        decisions = select(Decision.id, Decision.comment_id).where(Decision.comment_id.in_(select(comments.c.id)))
        made = decisions.subquery()
        message_id = "msg-" + cast(made.c.id, String)
        replaced = {"comment_id": made.c.comment_id, "decision_id": made.c.id, "message_id": message_id}
        connection.execute(_copies(CallbackDelivery, model_id, made, replaced))
    claim(sessions, sent_id, NOW)
    fail(sessions, sent_id, NOW, status_code=410)
    with sessions() as session:
        assert session.scalars(select(Site.callback_disabled_at)).one() == NOW
        statuses = session.execute(select(CallbackDelivery.status, func.count()).group_by(CallbackDelivery.status))
        assert {status: count for status, count in statuses} == {DeliveryStatus.DISABLED: many + 2}


def test_a_410_for_a_callback_sent_before_a_pause_keeps_the_pause_and_its_time(
    sessions: sessionmaker[Session], delivery_id: int
) -> None:
    assert claim(sessions, delivery_id, NOW) is not None
    pause(sessions, NOW)
    fail(sessions, delivery_id, NOW + timedelta(seconds=30), status_code=410)
    with sessions() as session:
        site = session.scalars(select(Site)).one()
        assert (site.callback_disabled_at, site.callbacks_paused_by) == (NOW, "admin@site.example")
        assert session.get_one(CallbackDelivery, delivery_id).status == DeliveryStatus.DISABLED


def test_a_second_pause_keeps_who_paused_first_and_since_when(
    sessions: sessionmaker[Session], delivery_id: int
) -> None:
    assert pause(sessions, NOW, by="first@site.example") == 1
    assert pause(sessions, NOW + timedelta(hours=1), by="second@site.example") == 0
    with sessions() as session:
        site = session.scalars(select(Site)).one()
        assert (site.callback_disabled_at, site.callbacks_paused_by) == (NOW, "first@site.example")


# --- what the operator sees of failing callbacks ------------------------------------------------------


def sites_with_callbacks(sessions: sessionmaker[Session], *names: str) -> dict[str, int]:
    with sessions.begin() as session:
        return {name: create_site(session, name, f"https://{name}.example/cb")[0].id for name in names}


def callback_of(sessions: sessionmaker[Session], site_id: int, external_id: str, created: datetime = NOW) -> int:
    with sessions.begin() as session:
        delivery = decided_comment(session, session.get_one(Site, site_id), external_id, created)
        assert delivery is not None
        return delivery.id


def failed_once(
    sessions: sessionmaker[Session], site_id: int, external_id: str, created: datetime = NOW, **failure: Any
) -> int:
    """A callback created at ``created`` whose first attempt, at once, failed (``fail``'s arguments)."""
    delivery_id = callback_of(sessions, site_id, external_id, created)
    assert claim(sessions, delivery_id, created) is not None
    fail(sessions, delivery_id, created, **failure)
    return delivery_id


def delivered(sessions: sessionmaker[Session], delivery_id: int, now: datetime) -> None:
    assert claim(sessions, delivery_id, now) is not None
    with sessions.begin() as session:
        callbacks.record_delivered(session.get_one(CallbackDelivery, delivery_id), 204, now)


def dead_letter(sessions: sessionmaker[Session], site_id: int, external_id: str) -> int:
    delivery_id = callback_of(sessions, site_id, external_id, NOW - timedelta(days=1))
    for attempt in range(POLICY.max_attempts):
        when = NOW - timedelta(days=1) + timedelta(hours=attempt)
        assert claim(sessions, delivery_id, when) is not None
        fail(sessions, delivery_id, when)
    assert load(sessions, delivery_id).status == DeliveryStatus.DEAD
    return delivery_id


def failing_now(sessions: sessionmaker[Session]) -> tuple[list[callbacks.FailingCallbacks], dict[int, int]]:
    with sessions() as session:
        return callbacks.failing_callbacks(session), callbacks.failing_callback_counts(session)


def test_failing_callbacks_are_summed_up_per_site(sessions: sessionmaker[Session]) -> None:
    """How many, since when, the newest one's answer and the soonest next attempt; neither callbacks not yet
    tried, delivered ones nor dead letters."""
    sites = sites_with_callbacks(sessions, "other-site", "backpain-advisor")
    backpain, other = sites["backpain-advisor"], sites["other-site"]
    first = failed_once(sessions, backpain, "c-1", NOW, status_code=500, retry_after=600)
    refused = "refused: cannot resolve backpain.example"
    failed_once(sessions, backpain, "c-2", NOW + timedelta(minutes=5), status_code=None, error=refused, retry_after=900)
    callback_of(sessions, backpain, "c-3", NOW + timedelta(minutes=6))
    delivered(sessions, callback_of(sessions, backpain, "c-4"), NOW)
    dead_letter(sessions, backpain, "c-5")
    down = failed_once(sessions, other, "c-1", NOW + timedelta(minutes=1), status_code=503, error="down")

    first_next, down_next = load(sessions, first).next_attempt_at, load(sessions, down).next_attempt_at
    assert first_next == NOW + timedelta(seconds=600)  # sooner than the newest one's (NOW + 5 min + 900 s)
    assert failing_now(sessions) == (
        [
            callbacks.FailingCallbacks(backpain, "backpain-advisor", 2, NOW, first_next, None, refused),
            callbacks.FailingCallbacks(other, "other-site", 1, NOW + timedelta(minutes=1), down_next, 503, "down"),
        ],
        {backpain: 2, other: 1},
    )


def test_a_failing_callback_on_the_wire_again_is_still_failing_until_delivered(
    sessions: sessionmaker[Session], delivery_id: int
) -> None:
    assert claim(sessions, delivery_id, NOW) is not None
    fail(sessions, delivery_id, NOW)
    next_attempt = load(sessions, delivery_id).next_attempt_at
    assert claim(sessions, delivery_id, next_attempt) is not None
    assert failing_now(sessions)[1] == {load(sessions, delivery_id).site_id: 1}
    with sessions.begin() as session:
        callbacks.record_delivered(session.get_one(CallbackDelivery, delivery_id), 204, next_attempt)
    assert failing_now(sessions) == ([], {})


def test_callbacks_held_back_by_a_pause_or_a_410_are_not_failing(sessions: sessionmaker[Session]) -> None:
    sites = sites_with_callbacks(sessions, "paused-site", "gone-site")
    failed_once(sessions, sites["paused-site"], "c-1")  # then held back by the pause
    on_the_wire = callback_of(sessions, sites["paused-site"], "c-2")
    assert claim(sessions, on_the_wire, NOW) is not None
    with sessions.begin() as session:
        callbacks.pause_callbacks(session, session.get_one(Site, sites["paused-site"]), NOW, "admin@site.example")
    fail(sessions, on_the_wire, NOW + timedelta(seconds=5))  # pending, but only sent after the resume
    assert load(sessions, on_the_wire).status == DeliveryStatus.PENDING
    failed_once(sessions, sites["gone-site"], "c-1")  # then held back by the 410
    failed_once(sessions, sites["gone-site"], "c-2", status_code=410)

    assert failing_now(sessions) == ([], {})


def statements_while(sessions: sessionmaker[Session], read: Callable[[Session], Any]) -> int:
    with statements_run(sessions.kw["bind"]) as statements, sessions() as session:
        read(session)
    return len(statements)


def test_failing_callbacks_are_read_in_one_statement_however_many_there_are(sessions: sessionmaker[Session]) -> None:
    sites = sites_with_callbacks(sessions, "backpain-advisor", "other-site")
    reads = (callbacks.failing_callbacks, callbacks.failing_callback_counts)
    for name, site_id in sites.items():
        failed_once(sessions, site_id, f"{name}-0")
    assert [statements_while(sessions, read) for read in reads] == [1, 1]
    for n in range(1, 6):
        for name, site_id in sites.items():
            failed_once(sessions, site_id, f"{name}-{n}", NOW + timedelta(seconds=n))
    assert failing_now(sessions)[1] == dict.fromkeys(sites.values(), 6)
    assert [statements_while(sessions, read) for read in reads] == [1, 1]


def test_migration_0006_keeps_a_410_disabled_site_shown_as_a_410(empty_database_url: str) -> None:
    url = empty_database_url
    upgrade_database(url, "0005")
    engine = create_engine(url)
    with engine.begin() as connection:  # a site a 410 turned off before pauses existed
        connection.execute(
            text("INSERT INTO sites (name, callback_disabled_at, created_at) VALUES ('s', :t, :t)"), {"t": NOW}
        )
    upgrade_database(url)
    assert drift_from_the_models(url) == []
    with make_session_factory(engine)() as session:
        site = session.scalars(select(Site)).one()
        assert site.callback_disabled_at is not None and site.callbacks_paused_by is None
    engine.dispose()
    downgrade_database(url, "0005")
    assert "callbacks_paused_by" not in column_names(url, "sites")
    upgrade_database(url)


# --- the HTTP side, against a real local server --------------------------------------------------

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 bytes: a valid test secret


@pytest.fixture
def site_server() -> Iterator[SiteServer]:
    server = SiteServer(secret=SECRET).start()
    yield server
    server.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """The workers' own client."""
    with callback_client() as client:
        yield client


PAYLOAD = {"type": COMMENT_DECIDED, "data": {"id": 7, "comment_id": "c-7", "decision": "hold", "reasons": ["x"]}}


def test_post_callback_is_signed_so_an_independent_verifier_accepts_it(
    site_server: SiteServer, client: httpx.Client
) -> None:
    attempt = post_callback(client, site_server.url, (SECRET,), "msg_abc", PAYLOAD, timeout=5)

    assert (attempt.ok, attempt.status_code, attempt.error) == (True, 204, "")
    (received,) = site_server.received
    assert received.event == PAYLOAD
    assert received.headers["webhook-id"] == "msg_abc"
    assert received.headers["content-type"] == "application/json"
    assert re.fullmatch(r"comment-moderation/[\w.+-]+ \(decision callbacks\)", received.headers["user-agent"])
    SvixWebhook(SECRET).verify(received.body, received.headers)
    timestamp = int(received.headers["webhook-timestamp"])
    assert abs(timestamp - time.time()) < 10
    by_hand = sign_from_spec(SECRET, "msg_abc", timestamp, received.body)
    assert by_hand in received.headers["webhook-signature"].split(" ")
    wrong = "whsec_" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    with pytest.raises(WebhookVerificationError):
        SvixWebhook(wrong).verify(received.body, received.headers)


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://2852039166/"])
def test_a_callback_url_at_a_metadata_address_is_never_posted_to(client: httpx.Client, url: str) -> None:
    """A URL saved before the check existed: the worker refuses it before connecting (no timeout waited)."""
    attempt = post_callback(client, url, (SECRET,), "msg_1", PAYLOAD, timeout=5)
    assert (attempt.ok, attempt.status_code) == (False, None)
    assert attempt.error.startswith("refused: ") and "link-local, unspecified or cloud metadata" in attempt.error


def test_a_callback_to_a_name_goes_to_the_address_checked_with_the_name_kept(
    site_server: SiteServer, client: httpx.Client
) -> None:
    """The name is resolved once and the POST connects to that address: no second lookup to rebind."""
    by_name = site_server.url.replace("127.0.0.1", "localhost")
    attempt = post_callback(client, by_name, (SECRET,), "msg_by_name", PAYLOAD, timeout=5)
    assert attempt.ok, attempt.error
    [received] = list(site_server.received)
    assert received.headers["host"] == by_name.split("/")[2]  # localhost:<port>, as the site expects


@pytest.mark.parametrize(
    "answers",
    [["169.254.169.254"], ["93.184.215.14", "169.254.169.254"], ["::ffff:169.254.169.254"], ["64:ff9b::a9fe:a9fe"]],
    ids=["metadata", "one-of-two", "ipv4-mapped", "nat64"],
)
def test_a_name_that_resolves_to_a_metadata_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, client: httpx.Client, answers: list[str]
) -> None:
    """DNS is the attacker's here (this host's resolver cannot be pointed there): its answers are stubbed."""

    def resolve(host: str, *_: object, **__: object) -> list[tuple[object, ...]]:
        assert host == "rebind.attacker.example"
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in answers]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    attempt = post_callback(client, "http://rebind.attacker.example/cb", (SECRET,), "msg_1", PAYLOAD, timeout=5)
    assert not attempt.ok and attempt.error.startswith("refused: rebind.attacker.example resolves to")


def test_a_name_that_does_not_resolve_is_refused_not_sent() -> None:
    with pytest.raises(CallbackAddressRefusedError, match="cannot resolve"):
        callback_addresses("no-such-host.invalid")


def test_the_name_checked_is_the_one_the_client_connects_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """IDNA 2003 and 2008 read "straße" differently: the name looked up is the client's encoding of it."""
    looked_up = []

    def resolve(host: str, *_: object, **__: object) -> list[tuple[object, ...]]:
        looked_up.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    attempt = post_callback(httpx.Client(), "http://straße.example/cb", (SECRET,), "msg_1", PAYLOAD, timeout=5)
    assert not attempt.ok and looked_up == ["xn--strae-oqa.example"]


def test_post_callback_reads_retry_after_in_seconds(site_server: SiteServer, client: httpx.Client) -> None:
    site_server.responder = always(503, **{"Retry-After": "120"})
    attempt = post_callback(client, site_server.url, (SECRET,), "msg_1", PAYLOAD, timeout=5)
    assert (attempt.ok, attempt.status_code, attempt.retry_after) == (False, 503, 120.0)
    assert attempt.error.startswith("HTTP 503")


def test_post_callback_reads_retry_after_as_an_http_date(site_server: SiteServer, client: httpx.Client) -> None:
    site_server.responder = always(429, **{"Retry-After": formatdate(time.time() + 300, usegmt=True)})
    attempt = post_callback(client, site_server.url, (SECRET,), "msg_1", PAYLOAD, timeout=5)
    assert (attempt.ok, attempt.status_code) == (False, 429)
    assert attempt.retry_after is not None and 290 <= attempt.retry_after <= 300


def test_a_hanging_endpoint_times_out(site_server: SiteServer, client: httpx.Client) -> None:
    site_server.responder = lambda _attempt: None
    started = time.monotonic()
    attempt = post_callback(client, site_server.url, (SECRET,), "msg_1", PAYLOAD, timeout=0.5)
    assert time.monotonic() - started < 5
    assert (attempt.ok, attempt.status_code, attempt.retry_after) == (False, None, None)
    assert "Timeout" in attempt.error


@pytest.fixture
def trickling_site() -> Iterator[str]:
    """A site that answers one byte every 0.2 s: each read is quick, the whole answer takes 15 s."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 204 No Content\r\nX-Slow: " + b"a" * 50 + b"\r\n\r\n":
                if stop.wait(0.2):
                    return
                with contextlib.suppress(OSError):
                    connection.sendall(bytes([byte]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/cb"
    stop.set()
    listener.close()
    thread.join(5)


def test_a_site_that_answers_a_byte_at_a_time_is_cut_off_at_the_timeout(
    trickling_site: str, client: httpx.Client
) -> None:
    """httpx's timeouts bound each read; a site that keeps answering slowly must not hold a worker longer."""
    started = time.monotonic()
    attempt = post_callback(client, trickling_site, (SECRET,), "msg_1", PAYLOAD, timeout=1)
    assert time.monotonic() - started < 3
    assert (attempt.ok, attempt.status_code) == (False, None)
    assert "Timeout" in attempt.error


@pytest.fixture
def keep_alive_site() -> Iterator[tuple[str, list[int]]]:
    """An HTTP/1.1 site that keeps connections open and answers every POST 204; counts the connections."""
    listener = socket.create_server(("127.0.0.1", 0))
    connections: list[int] = []

    def answer_each(connection: socket.socket) -> None:
        with connection, connection.makefile("rb") as reader:
            while request_line := reader.readline():
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    length = int(value) if name.strip().lower() == "content-length" else length
                reader.read(length)
                assert request_line.startswith(b"POST ")
                connection.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    def serve() -> None:
        with contextlib.suppress(OSError):  # the listener closed at the end
            while True:
                connection, _ = listener.accept()
                connections.append(connection.fileno())
                threading.Thread(target=answer_each, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/cb", connections
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
    listener.close()


def resolving(monkeypatch: pytest.MonkeyPatch, name: str, *answers: str) -> None:
    """``name`` resolves to each of ``answers`` in turn (the last one from then on); other names as usual.
    The system resolver cannot be pointed at a test's names, so its function is stubbed."""
    real = socket.getaddrinfo
    left = list(answers)

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != name:
            return real(host, *args, **kwargs)
        answer = left.pop(0) if len(left) > 1 else left[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


def test_callbacks_to_one_site_reuse_a_connection(keep_alive_site: tuple[str, list[int]], client: httpx.Client) -> None:
    url, connections = keep_alive_site
    attempts = [post_callback(client, url, (SECRET,), f"msg_{n}", PAYLOAD, timeout=5) for n in range(3)]
    assert [(a.ok, a.status_code) for a in attempts] == [(True, 204)] * 3
    assert len(connections) == 1


def test_two_sites_at_one_address_never_share_a_connection(
    keep_alive_site: tuple[str, list[int]], client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pooled by the site's name, not by the address: a connection made for one name (over TLS, its
    certificate checked for that name) must not carry another site's callbacks."""
    by_address, connections = keep_alive_site
    resolving(monkeypatch, "site-b.example", "127.0.0.1")
    by_name = by_address.replace("127.0.0.1", "site-b.example")
    for url in (by_address, by_name, by_address, by_name):
        attempt = post_callback(client, url, (SECRET,), "msg_1", PAYLOAD, timeout=5)
        assert attempt.ok, attempt.error
    assert len(connections) == 2


@pytest.mark.parametrize(
    "answer",
    [
        (500, {"Content-Type": "text/plain; charset=base64"}, b"not base64 at all"),
        (503, {"Retry-After": "\u00b2"}, b""),
        (503, {"Retry-After": "Fri, 31 Dec 99999999999999999999 23:59:59 GMT"}, b""),
    ],
    ids=["a-charset-that-is-no-text-encoding", "a-retry-after-digit-float-rejects", "a-retry-after-year-too-far"],
)
def test_a_strange_answer_is_a_failed_attempt_not_an_error(
    site_server: SiteServer, client: httpx.Client, answer: tuple[int, dict[str, str], bytes]
) -> None:
    site_server.responder = lambda _attempt: answer
    attempt = post_callback(client, site_server.url, (SECRET,), "msg_1", PAYLOAD, timeout=5)
    assert (attempt.ok, attempt.status_code) == (False, answer[0])
    assert attempt.error.startswith(f"HTTP {answer[0]}")


def test_the_connection_goes_to_the_address_checked_not_to_a_second_lookup(
    keep_alive_site: tuple[str, list[int]], client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name answers 127.0.0.1 when checked and another address after that (where
    nothing listens); the POST must reach the first."""
    by_address, connections = keep_alive_site
    resolving(monkeypatch, "rebinding.example", "127.0.0.1", "127.0.0.2")
    url = by_address.replace("127.0.0.1", "rebinding.example")
    attempt = post_callback(client, url, (SECRET,), "msg_1", PAYLOAD, timeout=5)
    assert (attempt.ok, attempt.status_code) == (True, 204), attempt.error
    assert len(connections) == 1


def resolving_to_all(monkeypatch: pytest.MonkeyPatch, name: str, *addresses: str) -> None:
    """``name`` resolves to all of ``addresses`` at once, in that order (IPv6 ones as AAAA records)."""
    real = socket.getaddrinfo

    def resolve(host: Any, port: Any = None, *args: Any, **kwargs: Any) -> Any:
        if host != name:
            return real(host, port, *args, **kwargs)
        number = int(port) if isinstance(port, int | str) else 0
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, number, 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, number))
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


def test_a_dual_stack_site_whose_ipv6_address_does_not_answer_gets_its_callback_over_ipv4(
    keep_alive_site: tuple[str, list[int]], client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name with an AAAA and an A record (``localhost`` on a stock Debian, where ``::1`` sorts first): the
    site listens on IPv4 only. Any HTTP client falls back to the next address; so does a callback."""
    by_address, connections = keep_alive_site
    resolving_to_all(monkeypatch, "dual-stack.example", "::1", "127.0.0.1")
    url = by_address.replace("127.0.0.1", "dual-stack.example")
    with httpx.Client(trust_env=False) as plain:
        assert plain.post(url, content=b"{}").status_code == 204

    attempt = post_callback(client, url, (SECRET,), "msg_dual", PAYLOAD, timeout=5)
    assert (attempt.ok, attempt.status_code) == (True, 204), attempt.error
    assert len(connections) == 2  # the plain client's and the callback's


def test_a_callback_no_address_of_which_answers_says_what_each_one_did(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolving_to_all(monkeypatch, "nobody-home.example", "::1", "127.0.0.1")
    url = f"http://nobody-home.example:{free_port()}/cb"
    attempt = post_callback(client, url, (SECRET,), "msg_1", PAYLOAD, timeout=2)
    assert (attempt.ok, attempt.status_code) == (False, None)
    assert attempt.error.startswith("ConnectError: cannot connect to nobody-home.example at ::1 ("), attempt.error
    assert ", 127.0.0.1 (" in attempt.error


def test_an_address_that_took_the_callback_and_failed_is_not_followed_by_the_next(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a connection that could not be made moves on to the next address: one that took the POST and then
    broke off may have delivered it, and the site must not get the same callback twice in one attempt."""
    first = socket.create_server(("127.0.0.1", 0))
    port = first.getsockname()[1]
    second = socket.create_server(("127.0.0.2", port))
    second.settimeout(0.5)

    def take_and_hang_up() -> None:
        connection, _ = first.accept()
        with connection:
            connection.recv(65536)

    thread = threading.Thread(target=take_and_hang_up, daemon=True)
    thread.start()
    resolving_to_all(monkeypatch, "two-addresses.example", "127.0.0.1", "127.0.0.2")
    try:
        attempt = post_callback(client, f"http://two-addresses.example:{port}/cb", (SECRET,), "msg_1", PAYLOAD, 2)
        thread.join(5)
        with pytest.raises(TimeoutError):
            second.accept()  # nobody came
    finally:
        first.close()
        second.close()
    assert (attempt.ok, attempt.status_code) == (False, None)
    assert "RemoteProtocolError" in attempt.error


def test_an_address_that_drops_packets_leaves_the_next_one_its_share_of_the_time(
    keep_alive_site: tuple[str, list[int]], client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An IPv6 address behind a firewall that drops packets (no refusal: the connect waits) must not use up the
    whole callback timeout: each address tried gets at most an equal part of the time left."""
    by_address, connections = keep_alive_site
    resolving_to_all(monkeypatch, "dropped-v6.example", "2001:db8::1", "127.0.0.1")
    real_connect = httpcore.SyncBackend.connect_tcp
    waited: list[float | None] = []

    def connect(self: httpcore.SyncBackend, host: str, port: int, timeout: float | None = None, *rest: Any) -> Any:
        if host != "2001:db8::1":
            return real_connect(self, host, port, timeout, *rest)
        waited.append(timeout)
        time.sleep(timeout or 0)
        raise httpcore.ConnectTimeout("timed out")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect)
    url = by_address.replace("127.0.0.1", "dropped-v6.example")
    attempt = post_callback(client, url, (SECRET,), "msg_1", PAYLOAD, timeout=1)
    assert (attempt.ok, attempt.status_code) == (True, 204), attempt.error
    assert len(waited) == 1 and waited[0] is not None and waited[0] <= 0.5
    assert len(connections) == 1


def test_a_2xx_whose_body_then_stalls_counts_as_received(client: httpx.Client) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    answered = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
            answered.wait(5)  # the rest of the body never comes while the client reads

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/cb"
        attempt = post_callback(client, url, (SECRET,), "msg_1", PAYLOAD, timeout=1)
    finally:
        answered.set()
        listener.close()
        thread.join(5)
    assert (attempt.ok, attempt.status_code) == (True, 200), attempt.error


def test_a_redirect_is_a_failure_that_names_where_it_points(site_server: SiteServer, client: httpx.Client) -> None:
    site_server.responder = always(301, Location="https://new.example/moderation-callback")
    attempt = post_callback(client, site_server.url, (SECRET,), "msg_1", PAYLOAD, timeout=5)
    assert (attempt.ok, attempt.status_code) == (False, 301)
    assert attempt.error.startswith("HTTP 301 to https://new.example/moderation-callback")
    assert len(site_server.received) == 1  # not followed


def test_a_long_error_answer_is_kept_cut_to_its_start(site_server: SiteServer, client: httpx.Client) -> None:
    site_server.responder = lambda _attempt: (500, {}, b"x" * (MAX_ANSWER_BYTES * 100))
    attempt = post_callback(client, site_server.url, (SECRET,), "msg_1", PAYLOAD, timeout=5)
    assert (attempt.ok, attempt.status_code) == (False, 500)
    assert attempt.error == "HTTP 500: " + "x" * 500


def test_an_unreachable_endpoint_is_a_failed_attempt(client: httpx.Client) -> None:
    closed = SiteServer()  # never started: nothing listens on its port
    attempt = post_callback(client, closed.url, (SECRET,), "msg_1", PAYLOAD, timeout=2)
    assert (attempt.ok, attempt.status_code) == (False, None)
    assert "ConnectError" in attempt.error


def test_an_unsendable_url_is_a_failed_attempt(client: httpx.Client) -> None:
    attempt = post_callback(client, "http://[::1/cb", (SECRET,), "msg_1", PAYLOAD, timeout=2)
    assert (attempt.ok, attempt.status_code) == (False, None)


def test_one_delivery_round_against_a_site_that_answers_410(
    sessions: sessionmaker[Session],
    site_server: SiteServer,
    client: httpx.Client,
) -> None:
    """What the notify task does, step by step: claim, sign with the site's secret, POST, record."""
    with sessions.begin() as session:
        site, site_server.secret = create_site(session, "gone-site", site_server.url)
        delivery = decided_comment(session, site, "c-1", datetime.now(UTC))
        assert delivery is not None
        delivery_id = delivery.id
    site_server.responder = always(410)

    now = datetime.now(UTC)
    with sessions.begin() as session:
        claimed = callbacks.claim_delivery(session, delivery_id, now, POLICY)
        assert claimed is not None
        site = session.get_one(Site, claimed.site_id)
        secrets = signing_secrets(site)
        attempt = post_callback(client, site.callback_url or "", secrets, claimed.message_id, claimed.payload, 5)
        callbacks.record_failed(
            session,
            claimed,
            status_code=attempt.status_code,
            error=attempt.error,
            retry_after=attempt.retry_after,
            now=now,
            policy=POLICY,
        )

    assert [r.verified for r in site_server.received] == [True]
    assert site_server.events()[0]["data"]["comment_id"] == "c-1"
    delivery = load(sessions, delivery_id)
    assert (delivery.status, delivery.last_status_code) == (DeliveryStatus.DISABLED, 410)


def three_callbacks_to(sessions: sessionmaker[Session], site_server: SiteServer, name: str) -> list[int]:
    """A new site at ``site_server`` with three decisions waiting to be told: their delivery ids."""
    with sessions.begin() as session:
        site, site_server.secret = create_site(session, name, site_server.url)
        deliveries = [decided_comment(session, site, f"c-{n}", datetime.now(UTC)) for n in range(3)]
        return [d.id for d in deliveries if d is not None]


def test_a_batch_being_sent_stops_for_a_site_paused_meanwhile(
    sessions: sessionmaker[Session], site_server: SiteServer, celery: ModerationCelery
) -> None:
    """A notify task's POSTs to a slow site: the pause that commits during the first one stops the rest."""
    ids = three_callbacks_to(sessions, site_server, "slow-site")

    def pause_during_the_first(_attempt: int) -> tuple[int, dict[str, str], bytes]:
        pause(sessions, datetime.now(UTC), by="ops@site.example")
        time.sleep(PAUSE_CHECK_SECONDS + 0.1)  # slow enough that the task looks again before the next POST
        return 204, {}, b""

    site_server.responder = pause_during_the_first
    result = celery.tasks[notify_site.name].apply(kwargs={"delivery_ids": ids}).get()

    assert result == "delivered" and len(site_server.received) == 1
    with sessions() as session:
        rest = [session.get_one(CallbackDelivery, i) for i in ids[1:]]
        assert [(d.status, d.attempts) for d in rest] == [(DeliveryStatus.PENDING, 0)] * 2
        assert callbacks.due_deliveries(session, datetime.now(UTC) + timedelta(days=1)) == []
    with sessions.begin() as session:
        assert callbacks.enable_callbacks(session, session.scalars(select(Site)).one(), datetime.now(UTC)) == 0
    with sessions() as session:
        assert sorted(callbacks.due_deliveries(session, datetime.now(UTC))) == ids[1:]


def test_a_batch_stops_sending_to_a_site_once_it_answers_410(
    sessions: sessionmaker[Session], site_server: SiteServer, celery: ModerationCelery
) -> None:
    ids = three_callbacks_to(sessions, site_server, "gone-site")
    site_server.responder = always(410)

    assert celery.tasks[notify_site.name].apply(kwargs={"delivery_ids": ids}).get() == DeliveryStatus.DISABLED
    assert len(site_server.received) == 1  # the other two would only have been told Gone as well
    with sessions() as session:
        assert session.scalars(select(Site.callback_disabled_at)).one() is not None
        assert [session.get_one(CallbackDelivery, i).attempts for i in ids] == [1, 0, 0]
        assert callbacks.due_deliveries(session, datetime.now(UTC) + timedelta(days=1)) == []


# --- signing while a secret is rotated, verified with the standardwebhooks library ---------------


def notify(celery: ModerationCelery, delivery_id: int) -> str:
    """What a worker does with a notify message: this app's task, with this app's runtime."""
    result: str = celery.tasks[notify_site.name].apply(kwargs={"delivery_ids": [delivery_id]}).get()
    return result


def verifies(secret: str, received: Received) -> bool:
    try:
        StandardWebhook(secret).verify(received.body, received.headers)
    except StandardVerificationError:
        return False
    return True


def test_callbacks_verify_with_the_old_or_the_new_secret_during_the_overlap_then_only_the_new(
    sessions: sessionmaker[Session], celery: ModerationCelery, site_server: SiteServer
) -> None:
    """Mid-rotation a site holds the old secret only (it has not switched yet) or the new one only."""
    now = datetime.now(UTC)
    with sessions.begin() as session:
        site, old = create_site(session, "rotating-site", site_server.url)
        new = rotate_secret(session, site, timedelta(hours=24), now)
        during = decided_comment(session, site, "c-during", now)
        assert during is not None
        during_id = during.id
    site_server.secret = old
    assert notify(celery, during_id) == DeliveryStatus.DELIVERED

    (received,) = site_server.received
    assert received.verified  # the site server itself, holding the old secret, accepted it
    assert verifies(old, received) and verifies(new, received)
    message_id, timestamp = received.headers["webhook-id"], int(received.headers["webhook-timestamp"])
    assert received.headers["webhook-signature"].split(" ") == [
        sign_from_spec(new, message_id, timestamp, received.body),  # newest first
        sign_from_spec(old, message_id, timestamp, received.body),
    ]

    with sessions.begin() as session:  # the overlap is over: intake refuses the old secret from now on
        for key in session.scalars(select(SiteSecret).where(SiteSecret.secret == old)):
            key.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        site = session.scalars(select(Site).where(Site.name == "rotating-site")).one()
        assert site.usable_secrets(datetime.now(UTC)) == [new]
        after = decided_comment(session, site, "c-after", datetime.now(UTC))
        assert after is not None
        after_id = after.id
    assert notify(celery, after_id) == DeliveryStatus.DELIVERED

    received = site_server.received[1]
    assert verifies(new, received) and not verifies(old, received)
    assert received.headers["webhook-signature"].count("v1,") == 1


def test_a_name_lookup_that_hangs_is_given_up_within_the_callback_timeout(
    monkeypatch: pytest.MonkeyPatch, client: httpx.Client
) -> None:
    """A slow resolver must not hold a notify task past the callback's own timeout."""
    answered = threading.Event()

    def resolve(*_: object, **__: object) -> list[tuple[object, ...]]:
        answered.wait(10)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    started = time.monotonic()
    attempt = post_callback(client, "http://slow-dns.example/cb", (SECRET,), "msg_1", PAYLOAD, timeout=0.5)
    elapsed = time.monotonic() - started
    answered.set()
    assert not attempt.ok and attempt.error == "refused: cannot resolve slow-dns.example: no answer within 0.5 s"
    assert elapsed < 3


def test_a_callback_urls_credentials_stay_out_of_the_log(
    site_server: SiteServer, client: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sites guard their endpoint with user:password@ or ?token=; the worker's log must not hand them out."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    try:
        configure_logging("INFO")
        url = site_server.url.replace("http://", "http://cbuser:cbpass@") + "?token=TOPSECRET123"
        attempt = post_callback(client, url, (SECRET,), "msg_1", PAYLOAD, timeout=5)
        logging.getLogger("workers.tasks").info("callback sent")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)
    assert attempt.ok, attempt.error
    assert [r.headers["authorization"] for r in site_server.received] == ["Basic Y2J1c2VyOmNicGFzcw=="]
    written = capsys.readouterr().err
    assert "callback sent" in written
    assert "cbpass" not in written and "TOPSECRET123" not in written


def test_a_site_whose_name_server_hangs_holds_one_lookup_and_never_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retried callbacks to a hanging name must not use up the lookups every other site's callbacks need."""
    answered = threading.Event()
    asked: list[str] = []

    def resolve(host: str, *_: object, **__: object) -> list[tuple[object, ...]]:
        asked.append(host)
        if host == "hanging-dns.example":
            answered.wait(10)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    try:
        for _ in range(20):
            with pytest.raises(CallbackAddressRefusedError, match=r"no answer within 0\.05 s"):
                callback_addresses("hanging-dns.example", timeout=0.05)
        assert callback_addresses("site.example", timeout=2) == ("127.0.0.1",)  # not queued behind the hanging one
        assert asked.count("hanging-dns.example") == 1
    finally:
        answered.set()


def test_a_sites_answer_with_control_characters_is_recorded_and_the_batch_with_it(
    sessions: sessionmaker[Session], celery: ModerationCelery
) -> None:
    """A site answering 500 with a NUL in its body made the whole batch's record fail on PostgreSQL (text
    cannot hold NUL): every delivery in it, other sites' too, stayed unrecorded and was sent again after each
    lease. The answer is now kept with its control characters shown as U+FFFD."""
    bad = SiteServer(responder=lambda _n: (500, {"content-type": "text/plain"}, b"oops\x00\x1b[31m")).start()
    good = SiteServer(responder=always(204)).start()
    try:
        now = datetime.now(UTC)
        with sessions.begin() as session:
            good_site, good.secret = create_site(session, "good-site", good.url)
            bad_site, bad.secret = create_site(session, "bad-site", bad.url)
            deliveries = [decided_comment(session, site, f"c-{site.name}", now) for site in (good_site, bad_site)]
            ids = [delivery.id for delivery in deliveries if delivery is not None]
        celery.tasks[notify_site.name].apply(kwargs={"delivery_ids": ids}).get()
        with sessions() as session:
            told, failed = (session.get_one(CallbackDelivery, i) for i in ids)
            assert (told.status, told.attempts) == (DeliveryStatus.DELIVERED, 1)
            assert (failed.status, failed.attempts, failed.last_status_code) == (DeliveryStatus.PENDING, 1, 500)
            assert failed.last_error == "HTTP 500: oops\ufffd\ufffd[31m"
        assert (len(good.received), len(bad.received)) == (1, 1)
    finally:
        bad.stop()
        good.stop()
