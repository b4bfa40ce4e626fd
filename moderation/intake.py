"""Accepting a comment: store it with its outbox row, idempotently, in the caller's transaction."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, Select, bindparam, delete, insert, literal, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.entities import (
    PERSONAL_COLUMNS,
    Comment,
    CommentStatus,
    OutboxMessage,
    Site,
    WebhookReceipt,
    author_network,
    search_values,
)
from moderation.features import visible
from moderation.sites import SiteKeys

CLASSIFY = "classify"

# What a stored comment may hold, whoever hands it in: the webhook's schema and `moderation classify`
# both refuse text past these, so a script never gets a score for a comment the service would not take.
MAX_BODY_CHARS = 20_000
MAX_AUTHOR_NAME_CHARS = 200
MAX_EMAIL_CHARS = 320
MAX_URL_CHARS = 2000


def storable(value: str) -> str:
    """``value`` if a text column can hold it; else ``ValueError`` saying what is wrong, never echoing it."""
    # PostgreSQL text cannot hold NUL, and lone surrogates ("\ud800" in JSON) cannot be encoded.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("must be valid Unicode (no lone surrogates)") from error
    return value


def within_limit(value: str, max_chars: int) -> str:
    """``value`` if it has at most ``max_chars`` characters (code points, as the webhook's schema counts)."""
    if len(value) > max_chars:
        raise ValueError(f"must be at most {max_chars} characters")
    return value


@dataclass(frozen=True, slots=True)
class NewComment:
    external_id: str
    article_id: str
    body: str
    article_url: str | None = None
    article_title: str | None = None
    author_name: str | None = None
    author_email: str | None = None
    author_url: str | None = None
    author_ip: str | None = None
    author_user_agent: str | None = None
    parent_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None  # set by comment.updated: the site's time of this version

    @property
    def version_at(self) -> datetime | None:
        """The site's timestamp of this version of the comment, which orders out-of-order deliveries."""
        return self.updated_at or self.created_at


@dataclass(frozen=True, slots=True)
class Accepted:
    comment_id: int
    status: str
    created: bool
    queued: bool = False  # classification was queued: publish after commit, answer 202
    revision: int | None = None  # of the text queued


class WebhookIdReusedError(Exception):
    """A ``webhook-id`` already accepted with another payload: a different message, not a retry of it.

    Standard Webhooks: an id names one message, and every retry of it carries the same body. Answering
    such a delivery as a repeat would drop it while telling the site it was accepted.
    """

    def __init__(self, webhook_id: str, comment_id: int) -> None:
        super().__init__(f"webhook-id {webhook_id!r} was already used for a different payload")
        self.webhook_id = webhook_id
        self.comment_id = comment_id


class CommentIdReusedError(Exception):
    """A ``comment.created`` for a site comment id already stored, but describing another comment.

    Not a repeat of the stored comment: answering it as one would tell the site that comment's status for
    text nobody moderated. An edit is sent as ``comment.updated``; a new comment needs its own id.
    ``differs`` names what differs (``what_differs``): the body, the article id, or, for a comment the
    site has edited since, the creation time (``stored_created_at``).
    """

    def __init__(
        self,
        external_id: str,
        comment_id: int,
        differs: tuple[str, ...] = ("body", "article id"),
        stored_created_at: datetime | None = None,
    ) -> None:
        super().__init__(f"comment_id {external_id!r} is already stored with a different {' and '.join(differs)}")
        self.external_id = external_id
        self.comment_id = comment_id
        self.differs = differs
        self.stored_created_at = stored_created_at


def body_fingerprint(body: str) -> str:
    """Same text, whatever the case, the spacing and any invisible characters: finds one body posted across
    articles."""
    return hashlib.sha256(" ".join(visible(body).lower().split()).encode()).hexdigest()


def accept_comment(
    session: Session,
    site: Site | SiteKeys,
    webhook_id: str,
    new: NewComment,
    now: datetime,
    payload_sha256: str | None = None,
) -> Accepted:
    """Store a new comment and the work to classify it, or find the one this delivery repeats.

    A repeat is the same ``webhook-id`` (with the same payload, else ``WebhookIdReusedError``) or the same
    site comment id (with the same comment, else ``CommentIdReusedError``). Two deliveries racing past
    these checks collide on the unique constraints; the caller rolls back and calls again, and then finds it.
    """
    seen = repeated_delivery(session, site.id, webhook_id, payload_sha256)
    if seen is not None:
        return Accepted(seen.id, seen.status, created=False)
    existing = session.scalar(select(Comment).where(Comment.site_id == site.id, Comment.external_id == new.external_id))
    if existing is not None:
        # A repeat, or the create of a comment an earlier update or delete already stored (stale by then).
        differs = what_differs(existing, new)
        if differs:
            raise CommentIdReusedError(new.external_id, existing.id, differs, existing.created_at)
        record_receipt(session, site.id, webhook_id, existing.id, now, payload_sha256)
        return Accepted(existing.id, existing.status, created=False)
    return store_comment(session, site, webhook_id, new, now, payload_sha256)


def store_comment(
    session: Session,
    site: Site | SiteKeys,
    webhook_id: str,
    new: NewComment,
    now: datetime,
    payload_sha256: str | None = None,
) -> Accepted:
    """Store a comment not stored yet, its receipt and the work to classify it.

    Another delivery that stored the same comment meanwhile makes this collide on the unique key; the caller
    rolls back and calls again, and then finds it (an update then applies to it, rather than being taken for
    a repeat of it).
    """
    comment = Comment(**_comment_columns(site.id, new, now))
    session.add(comment)
    session.flush()
    session.add_all(
        [
            WebhookReceipt(
                site_id=site.id,
                webhook_id=webhook_id,
                comment_id=comment.id,
                received_at=now,
                payload_sha256=payload_sha256,
            ),
            OutboxMessage(kind=CLASSIFY, comment_id=comment.id, created_at=now),
        ]
    )
    session.flush()
    return Accepted(comment.id, comment.status, created=True, queued=True, revision=comment.revision)


def what_differs(stored: Comment, created: NewComment) -> tuple[str, ...]:
    """What makes a create naming a stored comment's id another comment: empty when it does not.

    A repeat has the same body and article id; other fields may differ (an erasure removed the author's).
    A deleted comment is final and its tombstone has no text to compare: creates of it are acknowledged,
    with status ``deleted``. A comment that updates have edited holds their version, so its create,
    arriving late, is stale rather than different, unless the creation times, known on both sides, differ:
    then that is what differs (``"created_at"``); otherwise ``"body"``, ``"article id"`` or both.
    """
    if stored.status == CommentStatus.DELETED:
        return ()
    if (created.body, created.article_id) == (stored.body, stored.article_id):
        return ()
    if edited_by_the_site(stored):
        known = created.created_at is not None and stored.created_at is not None
        return ("created_at",) if known and created.created_at != stored.created_at else ()
    body = ("body",) if created.body != stored.body else ()
    return body + (("article id",) if created.article_id != stored.article_id else ())


def edited_by_the_site(comment: Comment) -> bool:
    """The stored version is an update's: its time moved past the creation time a create stores with it."""
    return comment.site_updated_at is not None and comment.site_updated_at != comment.created_at


def insert_new_comment(
    engine: Engine, site_id: int, webhook_id: str, new: NewComment, now: datetime, *, payload_sha256: str | None
) -> int | None:
    """The common case at intake in one round trip: the comment, its receipt and its outbox row.

    PostgreSQL only (a data-modifying WITH, atomic as one autocommitted statement); None elsewhere, or
    when the comment or the ``webhook-id`` is already known and nothing is written. The caller then takes
    ``accept_comment``, which finds out which it was and answers as before (or refuses an id reused for
    another payload). A known comment (the usual repeat: a site delivering the same webhook again) writes
    nothing without an error, so PostgreSQL's log stays free of it; a known ``webhook-id`` on a new comment
    still fails on its unique key.
    """
    if engine.dialect.name != "postgresql":
        return None
    values = _comment_columns(site_id, new, now) | {"webhook_id": webhook_id, "payload_sha256": payload_sha256}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        try:
            comment_id: int | None = connection.execute(_insert_new_statement(), values).scalar_one_or_none()
        except IntegrityError:
            return None
    return comment_id


@functools.cache
def _insert_new_statement() -> Select[int]:
    """Built once (building it costs more than sending it); every value is a bound parameter."""
    columns = _comment_columns(0, NewComment("", "", ""), datetime.now())
    stored = (
        postgresql.insert(Comment)
        .values({name: bindparam(name) for name in columns})
        .on_conflict_do_nothing(index_elements=[Comment.site_id, Comment.external_id])
        .returning(Comment.id)
        .cte("stored")
    )
    receipt = insert(WebhookReceipt).from_select(
        ["site_id", "webhook_id", "comment_id", "received_at", "payload_sha256"],
        select(
            bindparam("site_id"),
            bindparam("webhook_id"),
            stored.c.id,
            bindparam("received_at"),
            bindparam("payload_sha256"),
        ),
    )
    work = insert(OutboxMessage).from_select(
        ["kind", "comment_id", "created_at", "attempts"],
        select(literal(CLASSIFY), stored.c.id, bindparam("received_at"), literal(0)),
    )
    return select(stored.c.id).add_cte(receipt.cte("receipt"), work.cte("work"))


def _comment_columns(site_id: int, new: NewComment, now: datetime) -> dict[str, object]:
    columns: dict[str, object] = {
        "site_id": site_id,
        "external_id": new.external_id,
        "article_id": new.article_id,
        "article_url": new.article_url,
        "article_title": new.article_title,
        **personal_columns(new),
        "author_network": author_network(new.author_ip) if new.author_ip else None,  # the validator's, by hand
        "body": new.body,
        "body_fingerprint": body_fingerprint(new.body),
        "parent_id": new.parent_id,
        "created_at": new.created_at,
        "site_updated_at": new.version_at,
        "received_at": now,
        "status": CommentStatus.PENDING,
        "revision": 0,
    }
    return columns | search_values(columns)  # the model's validators', by hand (the insert does without the ORM)


def personal_columns(new: NewComment) -> dict[str, str | None]:
    """The author's personal data in ``new``, by column name (``models.entities.PERSONAL_COLUMNS``)."""
    return {column.key: getattr(new, column.key) for column in PERSONAL_COLUMNS}


def repeated_delivery(
    session: Session, site_id: int, webhook_id: str, payload_sha256: str | None = None
) -> Comment | None:
    """The comment an already accepted ``webhook-id`` was about (any event type).

    Raises ``WebhookIdReusedError`` when that delivery's payload was another one. Only two known digests
    are compared: receipts from before migration 0005 have none, and their replays are answered as before.
    """
    found = session.execute(
        select(Comment, WebhookReceipt.payload_sha256)
        .join(WebhookReceipt, WebhookReceipt.comment_id == Comment.id)
        .where(WebhookReceipt.site_id == site_id, WebhookReceipt.webhook_id == webhook_id)
    ).one_or_none()
    if found is None:
        return None
    comment, stored_sha256 = found
    if payload_sha256 is not None and stored_sha256 is not None and payload_sha256 != stored_sha256:
        raise WebhookIdReusedError(webhook_id, comment.id)
    return comment


def record_receipt(
    session: Session, site_id: int, webhook_id: str, comment_id: int, now: datetime, payload_sha256: str | None = None
) -> None:
    session.add(
        WebhookReceipt(
            site_id=site_id,
            webhook_id=webhook_id,
            comment_id=comment_id,
            received_at=now,
            payload_sha256=payload_sha256,
        )
    )


def purge_receipts(session: Session, before: datetime) -> int:
    """Forget webhook ids older than any replay could be (the signature's timestamp tolerance is minutes)."""
    result = session.execute(
        delete(WebhookReceipt).where(WebhookReceipt.received_at < before).execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
