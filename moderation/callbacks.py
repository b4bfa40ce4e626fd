"""Telling the site: one signed callback per decision change, retried with backoff, then dead-lettered.

The database row is the source of truth for a callback's state; a worker claims a due row with a
short lease before sending, so two workers never send the same attempt and a crashed worker's claim
lapses by itself.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from models.entities import CallbackDelivery, Comment, CommentStatus, Decision, DeliveryStatus, Site

COMMENT_DECIDED = "comment.decided"
COMMENT_REVIEWED = "comment.reviewed"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Defaults spread 12 attempts over about a day: 30 s, 1 min, 2 min ... capped at 6 h."""

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
    if not site.callback_url or comment.status == CommentStatus.DELETED:
        return None
    delivery = CallbackDelivery(
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
    session.add(delivery)
    session.flush()
    return delivery


def _claimable(now: datetime) -> Any:
    return or_(
        and_(CallbackDelivery.status == DeliveryStatus.PENDING, CallbackDelivery.next_attempt_at <= now),
        and_(CallbackDelivery.status == DeliveryStatus.SENDING, CallbackDelivery.lease_until < now),
    )


def claim_delivery(session: Session, delivery_id: int, now: datetime, policy: RetryPolicy) -> CallbackDelivery | None:
    """Lease a due delivery for one attempt; None when it is not due or another worker holds it."""
    claimed = session.execute(
        update(CallbackDelivery)
        .where(CallbackDelivery.id == delivery_id, _claimable(now))
        .values(status=DeliveryStatus.SENDING, lease_until=now + timedelta(seconds=policy.lease_seconds))
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(CallbackDelivery, delivery_id, populate_existing=True)


def due_deliveries(session: Session, now: datetime, limit: int = 500) -> list[int]:
    return list(
        session.scalars(
            select(CallbackDelivery.id).where(_claimable(now)).order_by(CallbackDelivery.next_attempt_at).limit(limit)
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
) -> None:
    """Schedule the next attempt; a 410 turns the site's endpoint off; the last failure is a dead letter."""
    delivery.attempts += 1
    delivery.last_status_code = status_code
    delivery.last_error = error[:2000]
    delivery.lease_until = None
    if status_code == 410:
        site = session.get(Site, delivery.site_id)
        if site is not None:
            site.callback_disabled_at = now
        delivery.status = DeliveryStatus.DISABLED
        session.execute(
            update(CallbackDelivery)
            .where(CallbackDelivery.site_id == delivery.site_id, CallbackDelivery.status == DeliveryStatus.PENDING)
            .values(status=DeliveryStatus.DISABLED)
            .execution_options(synchronize_session=False)
        )
        return
    if delivery.attempts >= policy.max_attempts:
        delivery.status = DeliveryStatus.DEAD
        return
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = now + timedelta(seconds=policy.delay(delivery.attempts, retry_after))


def locked_delivery(session: Session, delivery_id: int) -> CallbackDelivery | None:
    return session.get(CallbackDelivery, delivery_id, populate_existing=True, with_for_update=True)


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
    """Store one attempt's outcome; the new status, or None if the row is gone.

    The row is locked first: an edit or deletion that cancels the callback while it is on the wire either
    commits before (the callback stays cancelled, never retried) or waits until this result is stored.
    """
    delivery = locked_delivery(session, delivery_id)
    if delivery is None:
        return None
    if delivery.status == DeliveryStatus.CANCELLED:
        return DeliveryStatus.CANCELLED
    if delivered and status_code is not None:
        record_delivered(delivery, status_code, now)
    else:
        record_failed(
            session, delivery, status_code=status_code, error=error, retry_after=retry_after, now=now, policy=policy
        )
    return delivery.status


def replay(session: Session, delivery_id: int, now: datetime) -> CallbackDelivery:
    """Send a dead or disabled callback again, from a fresh attempt count (an operator's decision)."""
    delivery = session.get(CallbackDelivery, delivery_id)
    if delivery is None:
        raise LookupError(f"no callback delivery {delivery_id}")
    if delivery.status == DeliveryStatus.CANCELLED:  # withdrawn by an edit or a deletion: untrue by now
        raise LookupError(f"callback delivery {delivery_id} was cancelled; it is never sent")
    site = session.get(Site, delivery.site_id)
    if site is not None and site.callback_disabled_at is not None:
        # The operator turned the endpoint back on: everything the 410 held back goes out again.
        site.callback_disabled_at = None
        session.execute(
            update(CallbackDelivery)
            .where(CallbackDelivery.site_id == site.id, CallbackDelivery.status == DeliveryStatus.DISABLED)
            .values(status=DeliveryStatus.PENDING, next_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
    delivery.status = DeliveryStatus.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = now
    session.flush()
    return delivery
