"""The overview: comments per day by decision, queue size and age, agreement with the model, top reasons.

What each number counts (the page's captions say the same):
- per day: each comment once, on the day of its first decision, by its decision now; comments the site has
  deleted since are counted apart (``deleted``), not by the decision they had when deleted;
- the held queue: a comment waits from each hold (the model's, or a moderator's undo back to a hold) until
  its next decision or its deletion, so the last point is the header's count of held comments;
- agreement: only a moderator's verdict agrees with or overturns the model; the model deciding an edited
  comment again is neither.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask import jsonify, render_template
from flask.typing import ResponseReturnValue
from flask_login import login_required
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from dashboard.blueprint import bp
from dashboard.context import db
from dashboard.queries import queue_counts
from models.entities import Comment, CommentStatus, Decision, ModerationAction, Outcome
from moderation.reasons import Reason, reason_label

DAYS = 14
# Comments received this long before the window still count in its first days' queue.
LOOKBACK = timedelta(days=30)
MODEL = "model"
OUTCOMES = tuple(outcome.value for outcome in Outcome)
DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class _Decided:
    id: int
    outcome: str
    decided_by: str
    reasons: list[str]
    created_at: datetime


@dataclass(slots=True)
class _History:
    status: str
    deleted_at: datetime | None
    decisions: list[_Decided]


@dataclass(frozen=True, slots=True)
class _Spell:
    """A time in the held queue: from a hold until the comment left the queue (None: it still waits)."""

    held_at: datetime
    left_at: datetime | None

    def waiting_at(self, moment: datetime) -> bool:
        return self.held_at <= moment and (self.left_at is None or self.left_at > moment)


def overview_data(session: Session, now: datetime, days: int = DAYS) -> dict[str, Any]:
    start = datetime.combine(now.date() - timedelta(days=days - 1), time.min, UTC)
    day_list = [start.date() + timedelta(days=n) for n in range(days)]
    histories = _histories(session, _in_scope(start))
    replaced = _decisions_replaced_by_verdicts(session, _in_scope(start))
    queue_size, queue_age = _queue_series(histories, day_list, now)
    top_reasons = _top_reasons(histories, day_list)
    return {
        "days": [d.isoformat() for d in day_list],
        "per_day": _per_day(histories, day_list),
        "queue_size": queue_size,
        "queue_oldest_hours": queue_age,
        "agreement": _agreement(histories, replaced, start),
        "top_reasons": top_reasons,
        # How the dashboard names them (the chart's labels, as the page's text and the queue's chips do).
        "reason_labels": {reason: reason_label(reason) for reason, _ in top_reasons},
    }


def _in_scope(start: datetime) -> ColumnElement[bool]:
    """The comments to read: those received lately, and older ones that were held or judged in the window.

    Every comment still held is in, however old, so the queue's last point is the header's count; so is one
    a moderator acted on, the model decided again (an edit) or the site deleted in the window, which left or
    joined the queue then.
    """
    acted_on = select(ModerationAction.comment_id).where(ModerationAction.created_at >= start)
    decided_lately = select(Decision.comment_id).where(Decision.created_at >= start)
    return or_(
        Comment.received_at >= start - LOOKBACK,
        Comment.status == CommentStatus.HELD,
        Comment.deleted_at >= start,
        Comment.id.in_(acted_on),
        Comment.id.in_(decided_lately),
    )


def _histories(session: Session, scope: ColumnElement[bool]) -> list[_History]:
    rows = session.execute(
        select(
            Decision.comment_id,
            Decision.id,
            Decision.outcome,
            Decision.decided_by,
            Decision.reasons,
            Decision.created_at,
            Comment.status,
            Comment.deleted_at,
        )
        .join(Comment, Comment.id == Decision.comment_id)
        .where(scope)
        .order_by(Decision.comment_id, Decision.id)
    ).all()
    histories: dict[int, _History] = {}
    for row in rows:
        history = histories.setdefault(row.comment_id, _History(row.status, row.deleted_at, []))
        history.decisions.append(_Decided(row.id, row.outcome, row.decided_by, row.reasons, row.created_at))
    return list(histories.values())


def _decisions_replaced_by_verdicts(session: Session, scope: ColumnElement[bool]) -> dict[int, int | None]:
    """Moderator's decision id -> the decision it replaced (None: the comment had none, say after an edit)."""
    rows = session.execute(
        select(ModerationAction.after_decision_id, ModerationAction.before_decision_id)
        .join(Comment, Comment.id == ModerationAction.comment_id)
        .where(scope, ModerationAction.after_decision_id.is_not(None))
    ).all()
    return {after: before for after, before in rows if after is not None}


def _per_day(histories: Iterable[_History], day_list: Sequence[date]) -> dict[str, list[int]]:
    """Comments by the day of their first decision and by where they stand now."""
    counts: dict[str, Counter[str]] = {d.isoformat(): Counter() for d in day_list}
    for history in histories:
        day = history.decisions[0].created_at.date().isoformat()
        if day in counts:
            # A comment edited and waiting to be decided again counts by its last decision meanwhile.
            standing = DELETED if history.status == CommentStatus.DELETED else history.decisions[-1].outcome
            counts[day][standing] += 1
    return {kind: [counts[d.isoformat()][kind] for d in day_list] for kind in (*OUTCOMES, DELETED)}


def _top_reasons(histories: Iterable[_History], day_list: Sequence[date]) -> list[tuple[str, int]]:
    days = {d.isoformat() for d in day_list}
    reasons: Counter[str] = Counter()
    for history in histories:
        first = history.decisions[0]
        if first.created_at.date().isoformat() in days:
            reasons.update(first.reasons)
    return reasons.most_common(8)


def _held_spells(history: _History, now: datetime) -> list[_Spell]:
    """Each hold lasts until the comment's next decision, or its deletion if that came first.

    An edit takes a comment out of the queue (it waits to be decided again) without a decision row, so the
    moment is not known: a last hold on a comment no longer held is taken to have ended by ``now``.
    """
    spells = []
    decisions = history.decisions
    for decision, following in zip(decisions, [*decisions[1:], None], strict=True):
        if decision.outcome != Outcome.HOLD:
            continue
        left_at = following.created_at if following is not None else None
        if left_at is None and history.status != CommentStatus.HELD:
            left_at = now
        if history.deleted_at is not None:
            left_at = min(left_at, history.deleted_at) if left_at is not None else history.deleted_at
        spells.append(_Spell(decision.created_at, left_at))
    return spells


def _queue_series(
    histories: Iterable[_History], day_list: Sequence[date], now: datetime
) -> tuple[list[int], list[float]]:
    """Held comments and the oldest one's wait in hours, at the end of each day (the last day: now)."""
    spells = [spell for history in histories for spell in _held_spells(history, now)]
    sizes, oldest = [], []
    for d in day_list:
        end = min(datetime.combine(d + timedelta(days=1), time.min, UTC), now)
        waits = [end - spell.held_at for spell in spells if spell.waiting_at(end)]
        sizes.append(len(waits))
        oldest.append(round(max(waits).total_seconds() / 3600, 1) if waits else 0.0)
    return sizes, oldest


def _agreement(histories: Iterable[_History], replaced: dict[int, int | None], start: datetime) -> dict[str, int]:
    """What moderators' verdicts given in the window did to the model's decisions they judged.

    A verdict judges the model decision its chain of replaced decisions leads back to; the latest verdict
    on it stands (an undo included). One that restored a hold leaves the hold waiting: it counts as none.
    """
    agreement: Counter[str] = Counter()
    for history in histories:
        for judged, verdict in _standing_verdicts(history.decisions, replaced):
            if verdict.created_at < start or verdict.outcome == Outcome.HOLD:
                continue
            if Reason.NOT_CLASSIFIED in judged.reasons:  # held because the model gave no scores: not its call
                continue
            if judged.outcome == Outcome.HOLD:
                agreement["hold approved" if verdict.outcome == Outcome.APPROVE else "hold rejected"] += 1
            elif verdict.outcome != judged.outcome:
                agreement[f"{judged.outcome} overturned"] += 1
    return dict(agreement)


def _standing_verdicts(
    decisions: Sequence[_Decided], replaced: dict[int, int | None]
) -> list[tuple[_Decided, _Decided]]:
    """(model decision, the moderator's latest verdict on it) for each model decision a moderator judged."""
    by_id = {d.id: d for d in decisions}
    judged_of: dict[int, int | None] = {}  # decision id -> the model decision it goes back to
    standing: dict[int, _Decided] = {}
    for decision in decisions:  # in id order: what a verdict replaced comes before it
        if decision.decided_by == MODEL:
            judged_of[decision.id] = decision.id
            continue
        before = replaced.get(decision.id)
        judged = judged_of.get(before) if before is not None else None
        judged_of[decision.id] = judged
        if judged is not None:
            standing[judged] = decision
    return [(by_id[judged], verdict) for judged, verdict in standing.items()]


@bp.get("/overview")
@login_required
def overview() -> ResponseReturnValue:
    session = db()
    data = overview_data(session, datetime.now(UTC))
    held = data["agreement"].get("hold approved", 0) + data["agreement"].get("hold rejected", 0)
    return render_template("overview.html", data=data, counts=queue_counts(session), reviewed_holds=held)


@bp.get("/overview/data")
@login_required
def overview_json() -> ResponseReturnValue:
    return jsonify(overview_data(db(), datetime.now(UTC)))
