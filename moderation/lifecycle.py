"""Edits and deletions of a comment, in any delivery order, decided by the site's own timestamps.

Rules (docs/webhooks.md, "Edits and deletions"):
- an update that arrives before its create stores the comment from the update (the create then repeats it);
- an event older than (or as old as) the version stored changes nothing but is acknowledged;
- an update with a new body retires the current decision and queues the comment for classification
  again; a metadata-only update (same body) changes no decision;
- a delete is final: the comment leaves every queue, its unsent callbacks are cancelled and nothing
  later (create, update, classify task, moderator) brings it back or tells the site about it again.

Each use case locks the comment row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serializes writers),
so an edit and a worker deciding the old text cannot both win: the worker's decision is stored only if
the comment's ``revision`` is still the one it read (see ``moderation.decisions``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, cast, select, update
from sqlalchemy.orm import Session

from models.entities import Comment, CommentStatus, Decision, OutboxMessage, Site
from moderation import outbox
from moderation.callbacks import cancel_callbacks
from moderation.intake import (
    CLASSIFY,
    Accepted,
    NewComment,
    body_fingerprint,
    personal_columns,
    record_receipt,
    repeated_delivery,
    store_comment,
)
from moderation.privacy import author_values, forget_deleted_text, scrub_replaced_values
from moderation.reasons import Reason
from moderation.sites import SiteKeys

# Callbacks not yet (or not for sure) at the site: an edit or a deletion makes them untrue, so they go.


def locked_comment(session: Session, site_id: int, external_id: str) -> Comment | None:
    return session.scalar(
        select(Comment).where(Comment.site_id == site_id, Comment.external_id == external_id).with_for_update()
    )


def apply_update(
    session: Session,
    site: Site | SiteKeys,
    webhook_id: str,
    new: NewComment,
    now: datetime,
    payload_sha256: str | None = None,
) -> Accepted:
    """Apply ``comment.updated``; ``queued`` says a classify task must be published after commit.

    Raises ``WebhookIdReusedError`` for a ``webhook-id`` already accepted with another payload.
    """
    seen = repeated_delivery(session, site.id, webhook_id, payload_sha256)
    if seen is not None:
        return Accepted(seen.id, seen.status, created=False)
    comment = locked_comment(session, site.id, new.external_id)
    if comment is None:
        # The update overtook its create: store the comment from it (the create will repeat it). Not through
        # accept_comment: a create committed since the locking read would be found there and this update
        # answered as its repeat, its text never stored. Here that create's row makes the insert collide, and
        # the retry finds the row, locks it and applies the update to it.
        return store_comment(session, site, webhook_id, new, now, payload_sha256)
    record_receipt(session, site.id, webhook_id, comment.id, now, payload_sha256)
    if comment.status == CommentStatus.DELETED or _is_stale(comment, new.version_at):
        return Accepted(comment.id, comment.status, created=False)
    queued = _apply_version(session, comment, new, now)
    session.flush()
    return Accepted(comment.id, comment.status, created=False, queued=queued, revision=comment.revision)


def apply_delete(
    session: Session,
    site: Site | SiteKeys,
    webhook_id: str,
    external_id: str,
    deleted_at: datetime,
    now: datetime,
    payload_sha256: str | None = None,
) -> Accepted:
    """Apply ``comment.deleted``: final, whatever arrives later (``WebhookIdReusedError`` as for an update)."""
    seen = repeated_delivery(session, site.id, webhook_id, payload_sha256)
    if seen is not None:
        return Accepted(seen.id, seen.status, created=False)
    comment = locked_comment(session, site.id, external_id)
    if comment is None:
        # The delete overtook its create: keep a tombstone so the create is answered as a repeat.
        comment = _tombstone(site, external_id, now)
        session.add(comment)
        session.flush()
    record_receipt(session, site.id, webhook_id, comment.id, now, payload_sha256)
    if comment.status != CommentStatus.DELETED:
        mark_deleted(session, comment, min(deleted_at, now))
    session.flush()
    return Accepted(comment.id, comment.status, created=False)


def mark_deleted(session: Session, comment: Comment, deleted_at: datetime) -> None:
    """Out of every queue: held queue (status), outbox (classify work), callbacks (cancelled)."""
    comment.status = CommentStatus.DELETED
    comment.deleted_at = deleted_at
    outbox.complete(session, CLASSIFY, [comment.id])
    cancel_callbacks(session, comment.id)
    if comment.erased_at is not None:
        # Its author was erased while it was published (the text was public then): once deleted, it goes, as
        # an erasure of a deleted comment removes it; nothing later would (retention skips erased comments).
        forget_deleted_text(session, comment)


def _is_stale(comment: Comment, version_at: datetime | None) -> bool:
    """Stale when the stored version is as new or newer; an event without a timestamp never overrides one."""
    if comment.site_updated_at is None:
        return False
    return version_at is None or version_at <= comment.site_updated_at


def _apply_version(session: Session, comment: Comment, new: NewComment, now: datetime) -> bool:
    """Store the newer version; True when its body changed and it must be classified again."""
    comment.article_id = new.article_id
    comment.article_url = new.article_url
    comment.article_title = new.article_title
    comment.parent_id = new.parent_id
    comment.created_at = comment.created_at or new.created_at
    comment.site_updated_at = new.version_at
    if comment.erased_at is None:
        # After an erasure, personal data the site still sends is not stored again.
        earlier = author_values(comment)
        for name, value in personal_columns(new).items():
            setattr(comment, name, value)
        scrub_replaced_values(session, comment, earlier)  # else no erasure would know the values replaced
    if new.body == comment.body:
        return False
    comment.body = new.body
    comment.body_fingerprint = body_fingerprint(new.body)
    _classify_again(session, comment, now)
    return True


def send_back_unclassified(session: Session, now: datetime, site_id: int | None = None) -> list[int]:
    """Comments held as ``not_classified`` and still held (no moderator's verdict stands on them) go back to
    the classifiers, once whatever failed is fixed: pending at a new revision, their hold retired (its unsent
    callback withdrawn), their classify work written for the outbox relay to send. The ids, in order.
    """
    # Whoever the current decision names: a moderator's undo of a verdict on it restores the hold as theirs.
    held = (
        select(Comment)
        .join(Decision, (Decision.comment_id == Comment.id) & Decision.is_current)
        .where(Comment.status == CommentStatus.HELD)
        .where(cast(Decision.reasons, String).contains(f'"{Reason.NOT_CLASSIFIED}"', autoescape=True))
        .order_by(Comment.id)
    )
    if site_id is not None:
        held = held.where(Comment.site_id == site_id)
    comments = list(session.scalars(held.with_for_update(of=Comment)))
    for comment in comments:
        _classify_again(session, comment, now)
    ids = [comment.id for comment in comments]
    if ids:
        # As work the relay has sent before: it waits for its own task and joins no other comment's batch, so
        # if the cause is not fixed after all it fails alone.
        session.flush()
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.kind == CLASSIFY, OutboxMessage.comment_id.in_(ids), OutboxMessage.attempts == 0)
            .values(attempts=1)
            .execution_options(synchronize_session=False)
        )
    return ids


def _classify_again(session: Session, comment: Comment, now: datetime) -> None:
    """A new revision, pending, with its classify work waiting; the decision on the one before is retired."""
    comment.revision += 1
    _retire_current_decision(session, comment)
    comment.status = CommentStatus.PENDING
    _ensure_classify_work(session, comment.id, now)


def _retire_current_decision(session: Session, comment: Comment) -> None:
    """The decision was about the old text: it stops being current, and unsent callbacks are withdrawn.

    All of the comment's, not only the current decision's: an older decision's pending or dead-lettered
    callback (say the model's, before a moderator's verdict) is about the old text too, and a retry or an
    operator's replay would tell the site something untrue.
    """
    current = session.scalar(select(Decision).where(Decision.comment_id == comment.id, Decision.is_current))
    if current is not None:
        current.is_current = False
        session.flush()  # before a worker's new current decision can meet the partial unique index
    cancel_callbacks(session, comment.id)


def _ensure_classify_work(session: Session, comment_id: int, now: datetime) -> None:
    waiting = session.scalars(
        select(OutboxMessage).where(OutboxMessage.kind == CLASSIFY, OutboxMessage.comment_id == comment_id)
    ).all()
    if not waiting:
        session.add(OutboxMessage(kind=CLASSIFY, comment_id=comment_id, created_at=now))
    for work in waiting:
        if work.tries:
            work.tries = 0  # the runs that failed were on the old text: the new one gets its own
            work.counted_attempt = work.attempts


def _tombstone(site: Site | SiteKeys, external_id: str, now: datetime) -> Comment:
    return Comment(
        site_id=site.id,
        external_id=external_id,
        article_id="",
        body="",
        body_fingerprint=body_fingerprint(""),
        received_at=now,
        status=CommentStatus.PENDING,  # mark_deleted sets it, with the outbox and callbacks
    )
