"""The outbox relay's queries: work written with a comment that the broker may never have received."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from models.entities import OutboxMessage


def due_messages(session: Session, now: datetime, quiet_for: timedelta, limit: int = 500) -> list[OutboxMessage]:
    """Rows whose last publish (or creation) is older than ``quiet_for``: publish them again."""
    last_touch = func.coalesce(OutboxMessage.published_at, OutboxMessage.created_at)
    return list(
        session.scalars(
            select(OutboxMessage).where(last_touch < now - quiet_for).order_by(OutboxMessage.id).limit(limit)
        )
    )


def mark_published(session: Session, ids: list[int], now: datetime) -> None:
    """Note the relay's publish of ``ids``, skipping rows another transaction holds.

    A row held is a decision's work being completed: that transaction deletes it. Waiting for it here,
    while the decision waits for another row this statement already locked, would be a deadlock; skipped,
    the row keeps its old time, and if the decision rolls back the relay publishes it again.
    """
    if ids:
        free = (
            select(OutboxMessage.id)
            .where(OutboxMessage.id.in_(ids))
            .order_by(OutboxMessage.id)
            .with_for_update(skip_locked=True)
        )
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(free.scalar_subquery()))
            .values(published_at=now, attempts=OutboxMessage.attempts + 1)
            .execution_options(synchronize_session=False)
        )


def complete(session: Session, kind: str, comment_ids: list[int]) -> None:
    """The work is done: its outbox rows go, in the same transaction as the work's result."""
    if comment_ids:
        session.execute(
            delete(OutboxMessage)
            .where(OutboxMessage.kind == kind, OutboxMessage.comment_id.in_(comment_ids))
            .execution_options(synchronize_session=False)
        )


def backlog(session: Session) -> int:
    return int(session.scalar(select(func.count(OutboxMessage.id))) or 0)
