"""Decided comments with their scheduled callbacks, for tests of deliveries and of what shows them."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from models.entities import CallbackDelivery, Comment, Decision, Site
from moderation import callbacks
from moderation.callbacks import COMMENT_DECIDED, RetryPolicy
from moderation.intake import NewComment, accept_comment

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
POLICY = RetryPolicy(base_seconds=30, max_seconds=3600, max_attempts=3, lease_seconds=60)


def decided_comment(session: Session, site: Site, external_id: str, now: datetime = NOW) -> CallbackDelivery | None:
    accepted = accept_comment(
        session, site, f"wh-{external_id}", NewComment(external_id=external_id, article_id="a", body="Nice."), now
    )
    comment = session.get_one(Comment, accepted.comment_id)
    decision = Decision(comment_id=comment.id, outcome="approve", reasons=[], created_at=now)
    session.add(decision)
    comment.status = "approved"
    session.flush()
    return callbacks.schedule_callback(session, site, comment, decision, COMMENT_DECIDED, now)
