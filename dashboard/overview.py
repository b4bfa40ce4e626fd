"""The overview: comments per day by decision, queue size and age, agreement with the model, top reasons."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask import jsonify, render_template
from flask.typing import ResponseReturnValue
from flask_login import login_required
from sqlalchemy import select
from sqlalchemy.orm import Session

from dashboard.blueprint import bp
from dashboard.context import db
from dashboard.queries import queue_counts
from models.entities import Comment, Decision

DAYS = 14


def overview_data(session: Session, now: datetime, days: int = DAYS) -> dict[str, Any]:
    start = datetime.combine(now.date() - timedelta(days=days - 1), time.min, UTC)
    day_list = [start.date() + timedelta(days=n) for n in range(days)]
    rows = session.execute(
        select(Decision.comment_id, Decision.outcome, Decision.decided_by, Decision.reasons, Decision.created_at)
        .join(Comment, Comment.id == Decision.comment_id)
        .where(Comment.received_at >= start - timedelta(days=30))
        .order_by(Decision.comment_id, Decision.id)
    ).all()
    history: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        history[row.comment_id].append(row)

    per_day: dict[str, Counter[str]] = {d.isoformat(): Counter() for d in day_list}
    reasons: Counter[str] = Counter()
    agreement: Counter[str] = Counter()
    holds: list[tuple[datetime, datetime | None]] = []  # (held at, resolved at)
    for decisions in history.values():
        first = decisions[0]
        final = decisions[-1]
        day = first.created_at.date().isoformat()
        if day in per_day:
            per_day[day][final.outcome] += 1
            reasons.update(first.reasons)
        if first.decided_by == "model" and first.outcome == "hold":
            resolved = next((d.created_at for d in decisions[1:] if d.outcome != "hold"), None)
            holds.append((first.created_at, resolved))
            if resolved is not None:
                verdict = next(d.outcome for d in decisions[1:] if d.outcome != "hold")
                agreement["hold approved" if verdict == "approve" else "hold rejected"] += 1
        elif first.decided_by == "model" and len(decisions) > 1 and decisions[1].outcome != first.outcome:
            agreement[f"{first.outcome} overturned"] += 1

    queue_size, queue_age = [], []
    for d in day_list:
        end = min(datetime.combine(d + timedelta(days=1), time.min, UTC), now)
        waiting = [end - held for held, resolved in holds if held <= end and (resolved is None or resolved > end)]
        queue_size.append(len(waiting))
        queue_age.append(round(max(waiting).total_seconds() / 3600, 1) if waiting else 0)
    outcomes = ("approve", "hold", "reject")
    return {
        "days": [d.isoformat() for d in day_list],
        "per_day": {o: [per_day[d.isoformat()][o] for d in day_list] for o in outcomes},
        "queue_size": queue_size,
        "queue_oldest_hours": queue_age,
        "agreement": dict(agreement),
        "top_reasons": reasons.most_common(8),
    }


def _today() -> date:
    return datetime.now(UTC).date()


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
