"""Telling the site: one signed callback per decision change, retried with backoff, then dead-lettered.

The database row is the source of truth for a callback's state; a worker claims a due row with a
short lease before sending, so two workers never send the same attempt and a crashed worker's claim
lapses by itself.
"""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, aliased, joinedload

from models.entities import CallbackDelivery, Comment, CommentStatus, Decision, DeliveryStatus, Site
from moderation.sites import validate_callback_url

COMMENT_DECIDED = "comment.decided"
COMMENT_REVIEWED = "comment.reviewed"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Defaults spread 12 attempts over 7-15 hours: waits of 30 s, 1 min, 2 min ... capped at 6 h, each drawn
    between half and all of its value."""

    base_seconds: float = 30.0
    max_seconds: float = 6 * 3600.0
    max_attempts: int = 12
    lease_seconds: float = 60.0

    def delay(self, attempts: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Exponential backoff with "equal jitter"; never sooner than the site's Retry-After."""
        exponential = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1))
        jittered = exponential / 2 + (rng or random).uniform(0, exponential / 2)
        if retry_after is not None:
            jittered = max(jittered, min(retry_after, self.max_seconds))
        return float(jittered)


def decision_payload(event: str, site: Site, comment: Comment, decision: Decision) -> dict[str, Any]:
    return {
        "type": event,
        "timestamp": decision.created_at.isoformat(),
        "data": {
            "id": comment.id,
            "comment_id": comment.external_id,
            "site": site.name,
            "article_id": comment.article_id,
            "status": comment.status,
            "decision": decision.outcome,
            "reasons": list(decision.reasons),
            "scores": {"spam": decision.spam_score, "medical_advice": decision.advice_score},
            "decided_by": "model" if decision.by_model else "moderator",
            "model_version": decision.model_version,
            "decided_at": decision.created_at.isoformat(),
        },
    }


def schedule_callback(
    session: Session, site: Site, comment: Comment, decision: Decision, event: str, now: datetime
) -> CallbackDelivery | None:
    """Queue the callback for a new decision (none if the site has no callback URL or deleted the comment)."""
    delivery = new_callback(site, comment, decision, event, now)
    if delivery is not None:
        session.add(delivery)
        session.flush()
    return delivery


def new_callback(
    site: Site, comment: Comment, decision: Decision, event: str, now: datetime
) -> CallbackDelivery | None:
    """The callback row for a flushed decision, not yet added to a session (a batch adds them together)."""
    if not site.callback_url or comment.status == CommentStatus.DELETED:
        return None
    return CallbackDelivery(
        site_id=site.id,
        comment_id=comment.id,
        decision_id=decision.id,
        event=event,
        message_id=f"msg_{uuid.uuid4().hex}",
        payload=decision_payload(event, site, comment, decision),
        status=DeliveryStatus.DISABLED if site.callback_disabled_at else DeliveryStatus.PENDING,
        next_attempt_at=now,
        created_at=now,
    )


def _claimable(now: datetime) -> Any:
    # Never for a site whose callbacks are off, whatever the row says: a delivery rescheduled after a failure
    # that was on the wire when the site was paused, or a lapsed lease, waits for the site to be turned on.
    return and_(
        or_(
            and_(CallbackDelivery.status == DeliveryStatus.PENDING, CallbackDelivery.next_attempt_at <= now),
            and_(CallbackDelivery.status == DeliveryStatus.SENDING, CallbackDelivery.lease_until < now),
        ),
        CallbackDelivery.site_id.in_(_enabled_sites()),
    )


def _enabled_sites() -> Any:
    """Sites whose callbacks are on and have somewhere to go (held back for a cleared URL, they wait for one)."""
    return select(Site.id).where(Site.callback_disabled_at.is_(None), Site.callback_url.is_not(None))


def waiting_while_off() -> Any:
    """Callbacks waiting (pending) for a site whose callbacks are off: held back in all but name. Nothing claims
    them (``_claimable``) until the site's callbacks are on again, when each is sent at its next attempt; a
    replay takes one as it takes a held-back one. A 410's hold-back skips a row another transaction holds
    (``_hold_back_waiting``), and a callback on the wire when the callbacks went off comes back pending if its
    attempt fails: the dashboard lists them with the held-back ones."""
    return and_(CallbackDelivery.status == DeliveryStatus.PENDING, CallbackDelivery.site_id.not_in(_enabled_sites()))


def sites_turned_off(session: Session, site_ids: set[int]) -> set[int]:
    """Those of ``site_ids`` whose callbacks are off now (paused, or a 410)."""
    return set(session.scalars(select(Site.id).where(Site.id.in_(site_ids), Site.callback_disabled_at.is_not(None))))


def claim_delivery(session: Session, delivery_id: int, now: datetime, policy: RetryPolicy) -> CallbackDelivery | None:
    """Lease a due delivery for one attempt; None when it is not due or another worker holds it."""
    claimed = claim_deliveries(session, [delivery_id], now, policy)
    return claimed[0] if claimed else None


def claim_deliveries(
    session: Session, delivery_ids: list[int], now: datetime, policy: RetryPolicy
) -> list[CallbackDelivery]:
    """Lease the due ones of ``delivery_ids`` for one attempt each (with their sites' secrets loaded)."""
    claimed = session.scalars(
        update(CallbackDelivery)
        .where(CallbackDelivery.id.in_(delivery_ids), _claimable(now))
        .values(status=DeliveryStatus.SENDING, lease_until=now + timedelta(seconds=policy.lease_seconds))
        .returning(CallbackDelivery.id)
        .execution_options(synchronize_session=False)
    ).all()
    if not claimed:
        return []
    query = (
        select(CallbackDelivery)
        .where(CallbackDelivery.id.in_(claimed))
        .options(joinedload(CallbackDelivery.site).joinedload(Site.secrets))
        .order_by(CallbackDelivery.id)
        .execution_options(populate_existing=True)
    )
    return list(session.scalars(query).unique())


def release_held_back(session: Session, now: datetime) -> int:
    """Deliveries still held back although their site's callbacks are on again: due now; how many.

    ``enable_callbacks`` releases what is held back when a site is re-enabled, but a decision that read
    the site while it was disabled can commit its delivery as held back just after; the retry loop calls
    this on every round, so such a delivery waits one round, not until the next 410 and replay.
    """
    released = session.execute(
        update(CallbackDelivery)
        .where(CallbackDelivery.status == DeliveryStatus.DISABLED, CallbackDelivery.site_id.in_(_enabled_sites()))
        .values(status=DeliveryStatus.PENDING, next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(released.rowcount)  # type: ignore[attr-defined]


def due_deliveries(session: Session, now: datetime, limit: int = 500) -> list[int]:
    return list(
        session.scalars(
            select(CallbackDelivery.id)
            .where(_claimable(now))
            .order_by(CallbackDelivery.next_attempt_at, CallbackDelivery.id)  # ties: the older delivery first
            .limit(limit)
        )
    )


def record_delivered(delivery: CallbackDelivery, status_code: int, now: datetime) -> None:
    delivery.status = DeliveryStatus.DELIVERED
    delivery.attempts += 1
    delivery.last_status_code = status_code
    delivery.last_error = None
    delivery.lease_until = None
    delivery.delivered_at = now


def record_failed(
    session: Session,
    delivery: CallbackDelivery,
    *,
    status_code: int | None,
    error: str,
    retry_after: float | None,
    now: datetime,
    policy: RetryPolicy,
    sent_to: str | None = None,
) -> None:
    """Schedule the next attempt; a 410 turns the site's endpoint off; the last failure is a dead letter.

    A 410 from ``sent_to``, an address the site has since replaced (an admin saved a new URL while this
    callback was on the wire), says nothing about the new one: the callback is due again at once, there,
    without counting as an attempt.
    """
    delivery.last_status_code = status_code
    delivery.last_error = _storable_error(error)
    delivery.lease_until = None
    # Locked: an admin saving a new URL meanwhile either commits first (and is seen here) or waits for this.
    # FOR NO KEY UPDATE, all that changing its columns needs: a moderator's verdict on the comment holds the
    # site row FOR KEY SHARE (review._lock_site_of) while it waits for this callback's row, locked here.
    site = (
        session.get(Site, delivery.site_id, with_for_update={"key_share": True}, populate_existing=True)
        if status_code == 410
        else None
    )
    if status_code == 410 and _replaced(site, sent_to):
        # Not an attempt at the site's address at all: due again at once, at the new one, nothing used up.
        delivery.status = DeliveryStatus.PENDING
        delivery.next_attempt_at = now
        return
    delivery.attempts += 1
    if status_code == 410:
        if site is not None:  # already off (paused while this was on the wire): since when it was
            site.callback_disabled_at = site.callback_disabled_at or now
        delivery.status = DeliveryStatus.DISABLED
        _hold_back_waiting(session, delivery.site_id, skip_locked=True)
        return
    if delivery.attempts >= policy.max_attempts:
        delivery.status = DeliveryStatus.DEAD
        return
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = now + timedelta(seconds=policy.delay(delivery.attempts, retry_after))


# A site's answer is whatever it sends: PostgreSQL text cannot hold NUL, and other control characters would only
# garble the dashboard's line, so each is shown as U+FFFD.
CONTROL_CHARACTERS_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
LAST_ERROR_CHARS = 2000


def _storable_error(error: str) -> str:
    return CONTROL_CHARACTERS_RE.sub("\ufffd", error[:LAST_ERROR_CHARS])


def _replaced(site: Site | None, sent_to: str | None) -> bool:
    return site is not None and sent_to is not None and site.callback_url not in (None, sent_to)


def locked_deliveries(session: Session, delivery_ids: list[int]) -> dict[int, CallbackDelivery]:
    query = (
        select(CallbackDelivery)
        .where(CallbackDelivery.id.in_(delivery_ids))
        .order_by(CallbackDelivery.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {delivery.id: delivery for delivery in session.scalars(query)}


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one POST of a callback came to."""

    delivery_id: int
    status_code: int | None
    delivered: bool
    error: str = ""
    retry_after: float | None = None
    comment_id: int | None = None  # for the log line
    url: str | None = None  # where it was sent


def record_attempt(
    session: Session,
    delivery_id: int,
    *,
    status_code: int | None,
    delivered: bool,
    error: str,
    retry_after: float | None,
    now: datetime,
    policy: RetryPolicy,
) -> str | None:
    """Store one attempt's outcome; the new status, or None if the row is gone."""
    attempt = AttemptOutcome(delivery_id, status_code, delivered, error, retry_after)
    return record_attempts(session, [attempt], now, policy)[delivery_id]


def record_attempts(
    session: Session,
    attempts: list[AttemptOutcome],
    now: datetime,
    policy: RetryPolicy,
    lease: datetime | None = None,
) -> dict[int, str | None]:
    """Store attempts' outcomes; per delivery id the new status, or None if the row is gone or not ours.

    The rows are locked first: an edit or deletion that cancels a callback while it is on the wire either
    commits before (the callback stays cancelled, never retried) or waits until this result is stored.
    With ``lease`` (the claim's lease end), a row is only written while it still carries that lease: once
    another task has claimed it again, that task's result is the one that counts.
    """
    _lock_sites_gone(session, attempts)
    locked = locked_deliveries(session, [a.delivery_id for a in attempts]) if attempts else {}
    statuses: dict[int, str | None] = {}
    for attempt in attempts:
        delivery = locked.get(attempt.delivery_id)
        if delivery is None or delivery.status == DeliveryStatus.CANCELLED:
            statuses[attempt.delivery_id] = None if delivery is None else DeliveryStatus.CANCELLED
            continue
        if lease is not None and not _still_leased(delivery, lease):
            statuses[attempt.delivery_id] = None  # claimed again by another task, whose result counts
            continue
        if attempt.delivered and attempt.status_code is not None:
            record_delivered(delivery, attempt.status_code, now)
        else:
            record_failed(
                session,
                delivery,
                status_code=attempt.status_code,
                error=attempt.error,
                retry_after=attempt.retry_after,
                now=now,
                policy=policy,
                sent_to=attempt.url,
            )
        statuses[attempt.delivery_id] = delivery.status
    return statuses


def _lock_sites_gone(session: Session, attempts: list[AttemptOutcome]) -> None:
    """Lock the sites that answered 410 (FOR NO KEY UPDATE, as ``record_failed`` does), before their callbacks'
    rows: the site first and then its callbacks, as an admin's replay, pause or new URL takes them. Locked the
    other way round, a replay of the same callback arriving in between deadlocks with this."""
    gone = [attempt.delivery_id for attempt in attempts if attempt.status_code == 410]
    if not gone:
        return
    site_ids = select(CallbackDelivery.site_id).where(CallbackDelivery.id.in_(gone))
    session.execute(
        select(Site.id).where(Site.id.in_(site_ids)).order_by(Site.id).with_for_update(key_share=True)
    ).all()


def _still_leased(delivery: CallbackDelivery, lease: datetime) -> bool:
    return delivery.status == DeliveryStatus.SENDING and delivery.lease_until == lease


def end_lease(
    session: Session, delivery_ids: list[int], lease: datetime | None, now: datetime, held_because: str | None = None
) -> None:
    """Give back claimed deliveries that were not sent: due again at once, or held back with a reason (sent
    again once callbacks are turned on, as after a 410)."""
    if not delivery_ids:
        return
    values: dict[str, Any] = {"lease_until": None}
    if held_because is None:
        values |= {"status": DeliveryStatus.PENDING, "next_attempt_at": now}
    else:
        values |= {"status": DeliveryStatus.DISABLED, "last_error": held_because}
    session.execute(
        update(CallbackDelivery)
        .where(
            CallbackDelivery.id.in_(delivery_ids),
            CallbackDelivery.status == DeliveryStatus.SENDING,
            CallbackDelivery.lease_until == lease,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )


class ReplayError(ValueError):
    """A callback that is not a dead letter nor held back: replaying it would send it again, or twice at once."""


# What a replay refuses, and why: only dead letters and held-back callbacks (``waiting_while_off`` ones too) are
# sent again by an operator.
REPLAY_REFUSALS: dict[str, str] = {
    DeliveryStatus.DELIVERED: "was delivered already: the site has it, so it is not sent again",
    DeliveryStatus.SENDING: "is being sent right now: it is not sent a second time at once",
    DeliveryStatus.PENDING: "is queued already: it is sent at its next attempt",
    DeliveryStatus.CANCELLED: "was cancelled (withdrawn by an edit, a deletion or a verdict): it is never sent",
}


def replay(session: Session, delivery_id: int, now: datetime) -> CallbackDelivery:
    """Send a dead or disabled callback again, from a fresh attempt count (an operator's decision); also a
    pending one while its site's callbacks are off, held back in all but name (``waiting_while_off``).

    Any other is refused (ReplayError): a second click, a second admin's page loaded before the first
    replay, or a form sent again would otherwise send a delivered callback to the site again, or one a worker
    is sending a second time at once. The callback's row is read under its lock, so of two replays at once
    the second sees what the first did (a pending one replayed turned the site's callbacks on: the second is
    refused as queued already).

    A replay says a 410's endpoint is back, so it turns the site's callbacks on; it does not end a pause
    someone chose: the callback then waits, held back with the others, until callbacks are resumed.
    """
    found = session.get(CallbackDelivery, delivery_id)
    if found is None:
        raise LookupError(f"no callback delivery {delivery_id}")
    # Locked, the site first and then its callback (the order of every action on a site's callbacks): a pause
    # committed meanwhile is seen here, not half-undone by this write.
    site = session.get(Site, found.site_id, with_for_update=True, populate_existing=True)
    delivery = session.get_one(CallbackDelivery, delivery_id, with_for_update=True, populate_existing=True)
    site_off = site is None or site.callback_disabled_at is not None or not site.callback_url
    held_back = delivery.status == DeliveryStatus.DISABLED or (delivery.status == DeliveryStatus.PENDING and site_off)
    if delivery.status != DeliveryStatus.DEAD and not held_back:
        refusal = REPLAY_REFUSALS.get(delivery.status, f"is {delivery.status}: only dead or held-back ones are")
        raise ReplayError(f"Callback {delivery_id} {refusal}.")
    paused = site is not None and site.callbacks_paused_by is not None
    if site is not None and not paused:
        enable_callbacks(session, site, now)  # the operator turned the endpoint back on
    delivery.status = DeliveryStatus.DISABLED if paused else DeliveryStatus.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = now
    session.flush()
    return delivery


def enable_callbacks(session: Session, site: Site, now: datetime) -> int:
    """Turn the site's callbacks back on and release every delivery a 410 held back; how many were released.

    Every way of re-enabling a site goes through here (a replay, saving a callback URL, resuming paused
    callbacks, the demo setup).
    The release does not depend on the site still being marked disabled: whatever is held back for an
    enabled site is released too. A delivery committed as held back just after this (by a decision that
    read the site while it was disabled) is released by the retry loop (``release_held_back``).
    """
    site.callback_disabled_at = None
    site.callbacks_paused_by = None
    released = session.execute(
        update(CallbackDelivery)
        .where(CallbackDelivery.site_id == site.id, CallbackDelivery.status == DeliveryStatus.DISABLED)
        .values(status=DeliveryStatus.PENDING, next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(released.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class CallbackUrlSaved:
    url: str | None  # None: cleared
    stays_paused: bool  # someone paused the site's callbacks: a new address does not end that
    released: int  # callbacks held back (by a 410) that are due again, to the new address
    held_back: int = 0  # cleared: callbacks that were waiting, kept until a URL is saved again


def save_callback_url(session: Session, site: Site, url: str | None, now: datetime) -> CallbackUrlSaved:
    """Validate and save the site's callback URL (an empty one clears it); raises SiteError for a bad one.

    ``site`` is locked by the caller, so whether it is paused is read after any pause committed meanwhile.
    A URL saved ends what a 410 held back (that was about the old address) but not a pause someone chose.
    Cleared, there is nowhere to send to: what was waiting is held back, as a 410 would, and what a 410 held
    back stays held, until a URL is saved (none becomes a dead letter because a URL was briefly empty).
    """
    site.callback_url = validate_callback_url(url)
    if not site.callback_url:
        held = _hold_back_waiting(session, site.id)
        return CallbackUrlSaved(None, stays_paused=bool(site.callbacks_paused_by), released=0, held_back=held)
    if site.callbacks_paused_by:
        return CallbackUrlSaved(site.callback_url, stays_paused=True, released=0)
    return CallbackUrlSaved(site.callback_url, stays_paused=False, released=enable_callbacks(session, site, now))


def pause_callbacks(session: Session, site: Site, now: datetime, by: str) -> int:
    """Hold back the site's callbacks until ``enable_callbacks``, as a 410 would; how many waiting ones were held.

    For a site's maintenance: decisions go on being made and their callbacks are kept, none is sent and none
    uses up an attempt or becomes a dead letter meanwhile. One already on the wire finishes. Pausing a paused
    site keeps who paused it first and since when.
    """
    site.callback_disabled_at = site.callback_disabled_at or now
    site.callbacks_paused_by = site.callbacks_paused_by or by
    return _hold_back_waiting(session, site.id)


def _hold_back_waiting(session: Session, site_id: int, *, skip_locked: bool = False) -> int:
    """The site's waiting callbacks held back (DISABLED) until ``enable_callbacks``; how many.

    ``skip_locked`` for a worker recording a 410, which holds the row of the callback it sent: a moderator's
    verdict can hold another callback of the same comment while it waits for that row, to cancel both. Waiting
    for it would deadlock. A callback skipped stays pending, and that is safe: nothing is claimed for a site
    whose callbacks are off (``_claimable``), so it waits for the site as a held-back one does, unless the
    transaction holding it cancels it or sends it (and meets the 410 itself).
    """
    waiting = and_(CallbackDelivery.site_id == site_id, CallbackDelivery.status == DeliveryStatus.PENDING)
    if skip_locked:  # chosen within the statement: a busy site can have more waiting than a query takes ids
        waiting = CallbackDelivery.id.in_(select(CallbackDelivery.id).where(waiting).with_for_update(skip_locked=True))
    held = session.execute(
        update(CallbackDelivery)
        .where(waiting)
        .values(status=DeliveryStatus.DISABLED)
        .execution_options(synchronize_session=False)
    )
    return int(held.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class FailingCallbacks:
    """A site's callbacks that failed and are being retried: what an operator needs to see its endpoint is down."""

    site_id: int
    site_name: str
    count: int
    oldest_created_at: datetime  # of the oldest of them: how long the site has been missing decisions
    next_attempt_at: datetime  # the soonest of their next attempts (in the past: due, or on the wire now)
    last_status_code: int | None  # the newest one's last answer
    last_error: str | None


def _being_retried() -> Any:
    # On the wire again counts too, or the count would drop while a retry round is sending. A site whose
    # callbacks are off (paused, or a 410) is not retrying anything: its callbacks wait for a resume, whatever
    # their status says (one that failed on the wire when the pause began stays pending).
    return and_(
        CallbackDelivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.SENDING]),
        CallbackDelivery.attempts > 0,
        CallbackDelivery.site_id.in_(_enabled_sites()),
    )


def failing_callbacks(session: Session) -> list[FailingCallbacks]:
    """Per site, by name, its callbacks being retried after a failure; one query, however many there are.

    The answer given is the newest failing callback's: rows keep no time of their last attempt, and the newest
    one's is what the endpoint answered about the latest decision.
    """
    per_site = (
        select(
            CallbackDelivery.site_id,
            func.count().label("count"),
            func.min(CallbackDelivery.created_at).label("oldest_created_at"),
            func.min(CallbackDelivery.next_attempt_at).label("next_attempt_at"),
            func.max(CallbackDelivery.id).label("newest_id"),
        )
        .where(_being_retried())
        .group_by(CallbackDelivery.site_id)
        .subquery()
    )
    newest = aliased(CallbackDelivery)
    rows = session.execute(
        select(
            Site.id,
            Site.name,
            per_site.c.count,
            per_site.c.oldest_created_at,
            per_site.c.next_attempt_at,
            newest.last_status_code,
            newest.last_error,
        )
        .join(per_site, per_site.c.site_id == Site.id)
        .join(newest, newest.id == per_site.c.newest_id)
        .order_by(Site.name)
    )
    return [FailingCallbacks(*row) for row in rows]


def failing_callback_counts(session: Session) -> dict[int, int]:
    """Per site id, how many of its callbacks are being retried after a failure (sites with none left out)."""
    rows = session.execute(
        select(CallbackDelivery.site_id, func.count()).where(_being_retried()).group_by(CallbackDelivery.site_id)
    )
    return {site_id: count for site_id, count in rows}


# Not (surely) received by the site: waiting, on the wire, dead letters, or held back while the site is disabled.
UNSENT = (DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.DEAD, DeliveryStatus.DISABLED)


def cancel_callbacks(session: Session, comment_id: int, decision_id: int | None = None) -> int:
    """Cancel the comment's callbacks the site has not (surely) received; only those of one decision if given."""
    query = update(CallbackDelivery).where(
        CallbackDelivery.comment_id == comment_id, CallbackDelivery.status.in_(UNSENT)
    )
    if decision_id is not None:
        query = query.where(CallbackDelivery.decision_id == decision_id)
    result = session.execute(
        query.values(status=DeliveryStatus.CANCELLED, lease_until=None).execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
