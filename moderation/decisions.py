"""Deciding a comment: scores, signals beyond the text, policy, and the stored decision.

Idempotent: a comment that already has a current decision is left alone, and the partial unique
index on ``decisions(comment_id) WHERE is_current`` turns a race between two workers into an
IntegrityError for the loser instead of two decisions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.orm import Session, joinedload

from models.entities import (
    CallbackDelivery,
    Comment,
    CommentStatus,
    Decision,
    DeliveryStatus,
    OutboxMessage,
    Outcome,
)
from moderation import outbox
from moderation.callbacks import COMMENT_DECIDED, schedule_callback
from moderation.classifier import ModerationModel
from moderation.features import CommentText, link_count
from moderation.intake import CLASSIFY
from moderation.lists import entries_for_site, match_lists
from moderation.policy import PolicyLimits, Signals, Thresholds, Verdict, decide

log = logging.getLogger(__name__)

DUPLICATE_WINDOW = timedelta(days=1)
DUPLICATE_MIN_CHARS = 40  # "thanks!" twice is not a campaign
EDITED_AFTER_REVIEW = "edited_after_review"  # a moderator judged the old text; the new text waits for one


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
        # The author's history and their last hour in one query (one round trip per comment fewer).
        last_hour = func.count(Comment.id).filter(Comment.received_at >= now - timedelta(hours=1))
        rows = session.execute(
            select(Comment.status, func.count(Comment.id), last_hour)
            .where(same_author, Comment.id != comment.id)
            .group_by(Comment.status)
        ).all()
        history = {status: total for status, total, _ in rows}
        recent = sum(in_last_hour for _, _, in_last_hour in rows)
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
    """Classify and decide one pending comment; None if it is gone, deleted, already decided or edited meanwhile."""
    comment = session.get(Comment, comment_id, options=[joinedload(Comment.site)])  # one round trip, not two
    if comment is None:
        log.warning("comment %s is gone; nothing to classify", comment_id)
        return None
    # The newest decision is the current one if there is any; otherwise it is the one an edit retired.
    latest = _latest_decision(session, comment_id)
    if comment.status == CommentStatus.DELETED or (latest is not None and latest.is_current):
        _drop_classify_work_unless_edited(session, comment)
        return None
    revision = comment.revision
    text = comment_text(comment)
    scores, explanation = model.score_and_explain(text)
    verdict = decide(scores, site_thresholds(model, comment), gather_signals(session, comment, now), limits)
    verdict = _after_edit(verdict, latest)
    if not _claim_for_decision(session, comment, revision, Outcome(verdict.outcome).comment_status):
        # Edited or deleted while this text was being classified: the edit's own task decides the new text.
        log.info("comment changed while being classified; decision dropped", extra={"comment_id": comment_id})
        return None
    decision = Decision(
        comment_id=comment.id,
        outcome=verdict.outcome,
        is_current=True,
        spam_score=scores.spam,
        advice_score=scores.medical_advice,
        reasons=verdict.reasons,
        explanation=explanation,
        model_version=model.version,
        decided_by="model",
        created_at=now,
    )
    session.add(decision)
    session.flush()
    outbox.complete(session, CLASSIFY, [comment_id])
    delivery = None
    if not _site_already_knows(session, latest, decision):
        delivery = schedule_callback(session, comment.site, comment, decision, COMMENT_DECIDED, now)
    return Decided(
        comment.id, decision.id, decision.outcome, _pending_id(delivery), list(verdict.reasons), comment.received_at
    )


def _drop_classify_work_unless_edited(session: Session, comment: Comment) -> None:
    """A duplicate task found nothing to do: its outbox row goes, unless an edit has committed since the read.

    Nothing here locks the comment, so the delete checks the version it read: an edit in between made the
    comment pending at a new revision, and its outbox row is that edit's only promise of a classification.
    """
    unchanged = exists().where(
        Comment.id == comment.id,
        Comment.revision == comment.revision,
        Comment.status != CommentStatus.PENDING,
    )
    session.execute(
        delete(OutboxMessage)
        .where(OutboxMessage.kind == CLASSIFY, OutboxMessage.comment_id == comment.id, unchanged)
        .execution_options(synchronize_session=False)
    )


def _claim_for_decision(session: Session, comment: Comment, revision: int, status: CommentStatus) -> bool:
    """Set the status only if the comment is still the pending text that was classified (compare-and-swap)."""
    claimed = session.execute(
        update(Comment)
        .where(Comment.id == comment.id, Comment.revision == revision, Comment.status == CommentStatus.PENDING)
        .values(status=status)
        .execution_options(synchronize_session=False)
    )
    session.expire(comment, ["status", "revision"])
    return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]


def _latest_decision(session: Session, comment_id: int) -> Decision | None:
    """The comment's newest decision: a new current decision always gets the highest id."""
    return session.scalar(
        select(Decision).where(Decision.comment_id == comment_id).order_by(Decision.id.desc()).limit(1)
    )


def _after_edit(verdict: Verdict, previous: Decision | None) -> Verdict:
    """A moderator's verdict on the old text does not carry over to the new text: a human looks again.

    The model still decides the new text; only an approval turns into a hold (``edited_after_review``).
    A comment already held for that reason and edited again before review stays held for it.
    """
    reviewed = previous is not None and (not previous.by_model or EDITED_AFTER_REVIEW in previous.reasons)
    if not reviewed:
        return verdict
    if verdict.outcome == Outcome.APPROVE:
        return Verdict(Outcome.HOLD, [EDITED_AFTER_REVIEW])
    return Verdict(verdict.outcome, [*verdict.reasons, EDITED_AFTER_REVIEW])


def _site_already_knows(session: Session, previous: Decision | None, decision: Decision) -> bool:
    """An edit that left the outcome as it was needs no callback, if the site got the previous one."""
    if previous is None or previous.outcome != decision.outcome:
        return False
    delivered = session.scalar(
        select(CallbackDelivery.id).where(
            CallbackDelivery.decision_id == previous.id, CallbackDelivery.status == DeliveryStatus.DELIVERED
        )
    )
    return delivered is not None


def _pending_id(delivery: CallbackDelivery | None) -> int | None:
    return delivery.id if delivery is not None and delivery.status == "pending" else None
