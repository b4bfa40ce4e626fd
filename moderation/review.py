"""A moderator's verdict on a comment: the final decision, its audit row, the callback and a training label.

Optimistic concurrency: the moderator acts on the decision they saw (``expected_decision_id``). The old
decision is retired with a compare-and-swap ``UPDATE ... WHERE id = expected AND is_current``; whoever
loses that race (or arrives after someone else acted) gets a ConflictError naming who acted, and nothing
is overwritten. The partial unique index on current decisions backs this up.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.entities import (
    CallbackDelivery,
    Comment,
    CommentStatus,
    Decision,
    DeliveryStatus,
    ModerationAction,
    Moderator,
    Outcome,
    Site,
    TrainingLabel,
)
from moderation.callbacks import COMMENT_REVIEWED, cancel_callbacks, schedule_callback
from moderation.reasons import REJECT_REASONS, ModeratorReason, Reason

APPROVE = "approve"
REJECT = "reject"
UNDO = "undo"
ACTIONS = (APPROVE, REJECT, UNDO)


class ReviewError(ValueError):
    """A verdict that cannot be recorded as asked (unknown action or reason, nothing to undo, an undo undone)."""


class ConflictError(ReviewError):
    """Someone else changed the comment's decision after this moderator loaded it."""

    def __init__(self, comment_id: int, actor: str, current_decision_id: int | None, by: str = "") -> None:
        # The same account (a second click, another tab): "changed by you", not by its own address as if by another.
        who = "you, in another tab or with an earlier click," if actor == by else actor
        super().__init__(f"comment {comment_id} was changed by {who} in the meantime; nothing was overwritten")
        self.comment_id = comment_id
        self.actor = actor
        self.current_decision_id = current_decision_id


@dataclass(frozen=True, slots=True)
class ModeratorVerdict:
    outcome: str
    reasons: list[str]


MODERATOR = "moderator:"  # decisions.decided_by is "model" or this and the moderator's e-mail address


def moderator_label(moderator: Moderator) -> str:
    return f"{MODERATOR}{moderator.email}"


def moderator_email(decided_by: str) -> str:
    return decided_by.removeprefix(MODERATOR)


def record_verdict(
    session: Session,
    comment_id: int,
    moderator: Moderator,
    action: str,
    reason: str | None,
    note: str | None,
    expected_decision_id: int | None,
    now: datetime,
) -> Decision:
    """Record one verdict; the caller commits, then publishes ``pending_delivery_id``'s notify task."""
    verdict_reason = checked_action(action, reason, note)
    _lock_site_of(session, comment_id)
    # FOR NO KEY UPDATE: the verdict changes the comment's columns, never its key. FOR UPDATE also kept out the
    # foreign-key check of a worker updating the comment's callback twice in one transaction (a 410 recorded),
    # while this verdict waited for that callback's row: a deadlock.
    comment = session.scalar(select(Comment).where(Comment.id == comment_id).with_for_update(key_share=True))
    if comment is None:
        raise ReviewError(f"no comment {comment_id}")
    if comment.status == CommentStatus.DELETED:
        raise ReviewError(f"the site deleted comment {comment_id}; there is nothing to review")
    current = session.scalar(select(Decision).where(Decision.comment_id == comment_id, Decision.is_current))
    current_id = current.id if current is not None else None
    if current_id != expected_decision_id:
        raise ConflictError(comment_id, _last_actor(session, comment_id, current), current_id, moderator.email)
    template: Decision | None
    if action == UNDO:
        verdict, template = _undone(session, comment_id, current)
    else:
        outcome = Outcome.APPROVE if action == APPROVE else Outcome.REJECT
        verdict, template = ModeratorVerdict(outcome, [verdict_reason] if verdict_reason else []), current
    if current is not None:
        swapped = session.execute(
            update(Decision)
            .where(Decision.id == current.id, Decision.is_current)
            .values(is_current=False)
            .execution_options(synchronize_session=False)
        )
        if swapped.rowcount != 1:  # type: ignore[attr-defined]
            raise ConflictError(comment_id, _last_actor(session, comment_id, current), None, moderator.email)
        session.expire(current, ["is_current"])
    model_decision = _model_decision(session, comment_id)
    scores_from = template or model_decision
    decision = Decision(
        comment_id=comment_id,
        outcome=verdict.outcome,
        is_current=True,
        spam_score=scores_from.spam_score if scores_from else None,
        advice_score=scores_from.advice_score if scores_from else None,
        reasons=verdict.reasons,
        explanation=dict(model_decision.explanation) if model_decision else {},
        signals=dict(model_decision.signals) if model_decision else {},
        thresholds=dict(model_decision.thresholds) if model_decision else {},
        model_version=model_decision.model_version if model_decision else None,
        decided_by=moderator_label(moderator),
        note=note or None,
        created_at=now,
    )
    session.add(decision)
    before_status = comment.status
    comment.status = Outcome(verdict.outcome).comment_status
    session.flush()
    session.add(
        ModerationAction(
            comment_id=comment_id,
            moderator_id=moderator.id,
            action=action,
            reason=verdict_reason,
            note=note or None,
            before_status=before_status,
            after_status=comment.status,
            before_decision_id=current_id,
            after_decision_id=decision.id,
            created_at=now,
        )
    )
    # The verdict is final: a callback of an earlier decision still waiting (or retrying) would reach the
    # site after this one and undo it there.
    cancel_callbacks(session, comment_id)
    schedule_callback(session, comment.site, comment, decision, COMMENT_REVIEWED, now)
    if action == UNDO:
        _restore_label(session, comment, _verdict_behind(session, template), now)
    else:
        _update_label(session, comment, moderator, decision, verdict_reason, now)
    session.flush()
    return decision


def _lock_site_of(session: Session, comment_id: int) -> None:
    """Lock the comment's site row FOR KEY SHARE, before the comment and its callbacks.

    The lock the verdict's callback needs anyway (its foreign key), taken first: every action on a site's
    callbacks locks the site row and then the callbacks (the Sites page's pause, resume, new URL and rotation,
    a replay). Taken only when the callback was inserted, after the comment's unsent callbacks were locked to
    cancel them, it waited for such an action, which waited for those callbacks: PostgreSQL broke the
    deadlock by aborting the verdict (a 503, the verdict lost). Now one of the two waits for the other at the
    site row. KEY SHARE conflicts only with FOR UPDATE (those actions'), not with other verdicts, nor with the
    NO KEY UPDATE of a worker recording a 410 for the comment's callback, which this verdict may wait for.
    """
    site_id = session.scalar(select(Comment.site_id).where(Comment.id == comment_id))
    if site_id is not None:
        session.execute(select(Site.id).where(Site.id == site_id).with_for_update(read=True, key_share=True))


def pending_delivery_id(session: Session, decision: Decision) -> int | None:
    """The callback to publish after commit (none when the site has no callback URL or it is disabled)."""
    return session.scalar(
        select(CallbackDelivery.id).where(
            CallbackDelivery.decision_id == decision.id, CallbackDelivery.status == DeliveryStatus.PENDING
        )
    )


def put_back_by_undo(session: Session, decision_ids: Collection[int]) -> set[int]:
    """Those of the decisions that an undo put back: they are not undone in turn (one query for a whole page)."""
    if not decision_ids:
        return set()
    restored = session.scalars(
        select(ModerationAction.after_decision_id).where(
            ModerationAction.action == UNDO, ModerationAction.after_decision_id.in_(decision_ids)
        )
    )
    return {decision_id for decision_id in restored if decision_id is not None}


def checked_action(action: str, reason: str | None, note: str | None) -> str | None:
    """The reason a verdict records; ReviewError for an action this cannot be (one check, before any comment)."""
    if action not in ACTIONS:
        raise ReviewError(f"unknown action {action!r}")
    if "\x00" in (note or ""):  # PostgreSQL text cannot hold one
        raise ReviewError("the note cannot hold NUL characters")
    if action != REJECT:
        return None
    if reason not in REJECT_REASONS:
        raise ReviewError("a rejection needs a reason: " + ", ".join(REJECT_REASONS))
    if reason == ModeratorReason.OTHER and not (note or "").strip():
        raise ReviewError("say why in the note when the reason is 'other'")
    return reason


def _last_actor(session: Session, comment_id: int, current: Decision | None) -> str:
    action = session.scalar(
        select(ModerationAction).where(ModerationAction.comment_id == comment_id).order_by(ModerationAction.id.desc())
    )
    if action is not None and action.moderator is not None:
        return action.moderator.email
    if current is not None:
        return moderator_email(current.decided_by)
    return "someone else"


def _model_decision(session: Session, comment_id: int) -> Decision | None:
    return session.scalar(
        select(Decision)
        .where(Decision.comment_id == comment_id, Decision.decided_by == "model")
        .order_by(Decision.id.desc())
    )


def _undone(session: Session, comment_id: int, current: Decision | None) -> tuple[ModeratorVerdict, Decision]:
    """The decision that the current one replaced, to be restored as a new current decision."""
    last = session.scalar(
        select(ModerationAction)
        .where(ModerationAction.comment_id == comment_id, ModerationAction.after_decision_id == current.id)
        .order_by(ModerationAction.id.desc())
        if current is not None
        else select(ModerationAction).where(ModerationAction.id.is_(None))
    )
    if last is not None and last.action == UNDO:
        # Undoing the undo would silently bring back the verdict the moderator just withdrew.
        raise ReviewError("the last action on this comment was an undo: approve or reject it instead")
    if last is not None and last.before_decision_id is None:
        raise ReviewError(
            "this verdict was given before the model decided, so there is no earlier decision to go back to: "
            "approve or reject the comment instead"
        )
    previous = session.get(Decision, last.before_decision_id) if last and last.before_decision_id else None
    if previous is None:
        raise ReviewError("there is no moderator action to undo on this comment")
    return ModeratorVerdict(previous.outcome, list(previous.reasons)), previous


def _label_for(outcome: str, reason: str | None) -> tuple[bool | None, bool | None] | None:
    """(spam, medical_advice) that a verdict teaches; None when it says nothing about either label."""
    if outcome == Outcome.APPROVE:
        return False, False
    if outcome == Outcome.REJECT and reason == Reason.SPAM:
        return True, None
    if outcome == Outcome.REJECT and reason == Reason.MEDICAL_ADVICE:
        return None, True
    return None


def _update_label(
    session: Session, comment: Comment, moderator: Moderator, decision: Decision, reason: str | None, now: datetime
) -> None:
    """The comment's training label says what its current verdict says, and nothing an earlier one said."""
    _set_label(session, comment, _label_for(decision.outcome, reason), moderator.id, now)


def _verdict_behind(session: Session, decision: Decision | None) -> ModerationAction | None:
    """The moderator's approve or reject that ``decision`` stands for; None when it is the model's.

    An undo's decision is a copy of the one it put back, so the chain is followed back through undos: a
    model's decision put back by an undo is still the model's, however often it was overruled and restored.
    """
    while decision is not None and not decision.by_model:
        made = session.scalar(
            select(ModerationAction)
            .where(
                ModerationAction.comment_id == decision.comment_id, ModerationAction.after_decision_id == decision.id
            )
            .order_by(ModerationAction.id.desc())
        )
        if made is None or made.action != UNDO:
            return made
        # The undo put back the decision that the one it withdrew had replaced.
        withdrew = session.scalar(
            select(ModerationAction)
            .where(
                ModerationAction.comment_id == decision.comment_id,
                ModerationAction.after_decision_id == made.before_decision_id,
            )
            .order_by(ModerationAction.id.desc())
        )
        restored = withdrew.before_decision_id if withdrew is not None else None
        decision = session.get(Decision, restored) if restored is not None else None
    return None


def _restore_label(session: Session, comment: Comment, verdict: ModerationAction | None, now: datetime) -> None:
    """After an undo the label is the one of the verdict put back (its moderator's), none for the model's
    decision put back: the model's own predictions are never trained on as a moderator's labels."""
    if verdict is None:
        _set_label(session, comment, None, None, now)
        return
    _set_label(session, comment, _label_for(verdict.action, verdict.reason), verdict.moderator_id, verdict.created_at)


def _set_label(
    session: Session,
    comment: Comment,
    label: tuple[bool | None, bool | None] | None,
    moderator_id: int | None,
    at: datetime,
) -> None:
    existing = session.scalar(select(TrainingLabel).where(TrainingLabel.comment_id == comment.id))
    if label is None:
        # A final verdict that teaches nothing (rejected as abuse, off-topic...) overrules an earlier one that
        # did: an approval's "neither spam nor advice" left in place would train on a verdict withdrawn.
        if existing is not None:
            session.delete(existing)
        return
    if existing is None:
        existing = TrainingLabel(comment_id=comment.id, body=comment.body, source="moderator")
        session.add(existing)
    existing.spam, existing.medical_advice = label
    existing.body = comment.body
    existing.moderator_id = moderator_id
    existing.created_at = at
