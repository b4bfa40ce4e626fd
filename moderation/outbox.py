"""The outbox relay's queries: work written with a comment that the broker may never have received."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.orm import Session

from models.entities import OutboxMessage


def still_due(before: datetime) -> ColumnElement[bool]:
    """Last published (or written, if never published) before ``before``."""
    return func.coalesce(OutboxMessage.published_at, OutboxMessage.created_at) < before


def due_messages(session: Session, before: datetime, limit: int = 500) -> list[OutboxMessage]:
    """Rows last published (or written, if never published) before ``before``: publish them again."""
    return list(session.scalars(select(OutboxMessage).where(still_due(before)).order_by(OutboxMessage.id).limit(limit)))


def mark_published(session: Session, ids: list[int], now: datetime, *, due_before: datetime) -> set[int]:
    """Note the relay's publish of ``ids``, skipping rows another transaction holds and rows no longer due
    before ``due_before`` (the cutoff they were read as due with); the ids noted.

    Two relays at once (their messages queued behind a backlog, taken by two worker processes together) read
    the same rows as due: the second to note them finds them published by the first, since its statement
    sees what the first committed (or skips them while the first still holds them), and publishes nothing. The
    condition is checked where the rows are locked: PostgreSQL checks a row locked FOR UPDATE again as it was
    committed, so the UPDATE needs it no second time.

    A row held is a decision's work being completed (that transaction deletes it) or a relayed run counting
    its try. Waiting for it here, while the decision waits for another row this statement already locked,
    would be a deadlock; skipped, the row keeps its old time and is not published this time, and if the
    decision rolls back the relay publishes it later. The relay notes before it publishes, so a worker that
    takes the message at once sees the publish it came from (its try is counted per publish).
    """
    if not ids:
        return set()
    free = (
        select(OutboxMessage.id)
        .where(OutboxMessage.id.in_(ids), still_due(due_before))
        .order_by(OutboxMessage.id)
        .with_for_update(skip_locked=True)
    )
    noted = session.scalars(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(free.scalar_subquery()))
        .values(published_at=now, attempts=OutboxMessage.attempts + 1)
        .returning(OutboxMessage.id)
        .execution_options(synchronize_session=False)
    )
    return set(noted)


def not_published(session: Session, before: dict[int, datetime | None]) -> None:
    """Undo ``mark_published`` for rows whose message the broker refused (``before``: id -> the publish time
    they had): due again at the next round, as if never noted."""
    for row_id, published_at in before.items():
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row_id)
            .values(published_at=published_at, attempts=OutboxMessage.attempts - 1)
            .execution_options(synchronize_session=False)
        )


def complete(session: Session, kind: str, comment_ids: list[int]) -> dict[int, datetime]:
    """The work is done: its outbox rows go, in the same transaction as the work's result.

    Returns, per comment that had work waiting, when that work was written: since then the site has
    waited (for an edit, since the edit, unless the first text was still waiting too).
    """
    if not comment_ids:
        return {}
    rows = session.execute(
        delete(OutboxMessage)
        .where(OutboxMessage.kind == kind, OutboxMessage.comment_id.in_(comment_ids))
        .returning(OutboxMessage.comment_id, OutboxMessage.created_at)
        .execution_options(synchronize_session=False)
    )
    waiting_since: dict[int, datetime] = {}
    for comment_id, created_at in rows:
        waiting_since[comment_id] = min(created_at, waiting_since.get(comment_id, created_at))
    return waiting_since


def backlog(session: Session) -> int:
    return int(session.scalar(select(func.count(OutboxMessage.id))) or 0)
