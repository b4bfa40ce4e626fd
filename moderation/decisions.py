"""Deciding a comment: scores, signals beyond the text, policy, and the stored decision.

Idempotent: a comment that already has a current decision is left alone, and the partial unique
index on ``decisions(comment_id) WHERE is_current`` turns a race between two workers into an
IntegrityError for the loser instead of two decisions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from models.entities import CallbackDelivery, Comment, CommentStatus, Decision, Outcome
from moderation import outbox
from moderation.callbacks import COMMENT_DECIDED, schedule_callback
from moderation.classifier import ModerationModel
from moderation.features import CommentText, link_count
from moderation.intake import CLASSIFY
from moderation.lists import entries_for_site, match_lists
from moderation.policy import PolicyLimits, Signals, Thresholds, decide

log = logging.getLogger(__name__)

DUPLICATE_WINDOW = timedelta(days=1)
DUPLICATE_MIN_CHARS = 40  # "thanks!" twice is not a campaign


@dataclass(frozen=True, slots=True)
class Decided:
    comment_id: int
    decision_id: int
    outcome: str
    delivery_id: int | None
    reasons: list[str]
    received_at: datetime


def comment_text(comment: Comment) -> CommentText:
    return CommentText(
        body=comment.body,
        author=comment.author_name or "",
        email=comment.author_email or "",
        url=comment.author_url or "",
        article=comment.article_id,
    )


def site_thresholds(model: ModerationModel, comment: Comment) -> Thresholds:
    defaults = Thresholds(**model.card["thresholds"]) if "thresholds" in model.card else Thresholds()
    site = comment.site
    return defaults.overridden(
        spam_reject=site.spam_reject_threshold,
        spam_hold=site.spam_hold_threshold,
        advice_hold=site.advice_hold_threshold,
    )


def gather_signals(session: Session, comment: Comment, now: datetime) -> Signals:
    duplicates = 0
    if len(comment.body) >= DUPLICATE_MIN_CHARS:
        duplicates = (
            session.scalar(
                select(func.count(Comment.id)).where(
                    Comment.site_id == comment.site_id,
                    Comment.body_fingerprint == comment.body_fingerprint,
                    Comment.id != comment.id,
                    Comment.received_at >= now - DUPLICATE_WINDOW,
                )
            )
            or 0
        )
    same_author = _same_author(comment)
    recent = approved = rejected = 0
    if same_author is not None:
        recent = (
            session.scalar(
                select(func.count(Comment.id)).where(
                    same_author, Comment.id != comment.id, Comment.received_at >= now - timedelta(hours=1)
                )
            )
            or 0
        )
        history = dict(
            session.execute(
                select(Comment.status, func.count(Comment.id))
                .where(same_author, Comment.id != comment.id)
                .group_by(Comment.status)
            ).all()
        )
        approved = history.get(CommentStatus.APPROVED, 0)
        rejected = history.get(CommentStatus.REJECTED, 0)
    listed = match_lists(entries_for_site(session, comment.site_id), comment)
    return Signals(
        link_count=link_count(comment.body),
        blocked_terms=listed.blocked_terms,
        author_allowed=listed.author_allowed,
        duplicates_elsewhere=duplicates,
        author_posts_last_hour=recent,
        author_approved_before=approved,
        author_rejected_before=rejected,
    )


def _same_author(comment: Comment):  # type: ignore[no-untyped-def]
    conditions = []
    if comment.author_email:
        conditions.append(Comment.author_email == comment.author_email)
    if comment.author_ip:
        conditions.append(Comment.author_ip == comment.author_ip)
    if not conditions:
        return None
    return (Comment.site_id == comment.site_id) & or_(*conditions)


def current_decision(session: Session, comment_id: int) -> Decision | None:
    return session.scalar(select(Decision).where(Decision.comment_id == comment_id, Decision.is_current))


def decide_comment(
    session: Session, comment_id: int, model: ModerationModel, now: datetime, limits: PolicyLimits = PolicyLimits()
) -> Decided | None:
    """Classify and decide one pending comment; None if it is gone or already decided."""
    comment = session.get(Comment, comment_id)
    if comment is None:
        log.warning("comment %s is gone; nothing to classify", comment_id)
        return None
    if current_decision(session, comment_id) is not None:
        outbox.complete(session, CLASSIFY, [comment_id])
        return None
    text = comment_text(comment)
    scores = model.score(text)
    verdict = decide(scores, site_thresholds(model, comment), gather_signals(session, comment, now), limits)
    decision = Decision(
        comment_id=comment.id,
        outcome=verdict.outcome,
        is_current=True,
        spam_score=scores.spam,
        advice_score=scores.medical_advice,
        reasons=verdict.reasons,
        explanation=model.explain(text),
        model_version=model.version,
        decided_by="model",
        created_at=now,
    )
    session.add(decision)
    comment.status = Outcome(verdict.outcome).comment_status
    session.flush()
    outbox.complete(session, CLASSIFY, [comment_id])
    delivery = schedule_callback(session, comment.site, comment, decision, COMMENT_DECIDED, now)
    return Decided(
        comment.id, decision.id, decision.outcome, _pending_id(delivery), list(verdict.reasons), comment.received_at
    )


def _pending_id(delivery: CallbackDelivery | None) -> int | None:
    return delivery.id if delivery is not None and delivery.status == "pending" else None
