"""Typed mappings of every table the service keeps."""

import ipaddress
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from models.base import Base, utcnow
from models.text import searchable, searchable_fields

MAX_ROW_ID = 2**31 - 1  # integer primary keys are 32-bit on PostgreSQL: a larger id names no row


# One IPv6 subscriber holds a whole /64 (SLAAC, privacy addresses that change daily): counted per address, they
# would be a new author each day, or each request. IPv4 addresses count alone.
IPV6_AUTHOR_PREFIX = 64


def author_network(address: str) -> str:
    """Where an author writes from, as the author checks count it: the address itself, or its /64 for IPv6."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:  # validated at the door; kept as it is if it ever is not
        return address
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_AUTHOR_PREFIX}", strict=False))
    return str(parsed)


NETWORK_OUT_OF_STEP = "(author_ip IS NULL) <> (author_network IS NULL)"

# The fields each search column of ``comments`` is made of, in order (models.text.searchable_fields), besides
# search_text, which is the body's.
SEARCHED_AUTHOR = ("author_name", "author_email", "author_url")
SEARCHED_ARTICLE = ("article_id", "article_title")


# Rows whose search columns are out of step with what they copy, as processes of the version before migration
# 0013 leave them while they still serve: their intake stores none; their erasure and retention clear the author,
# and a deleted comment's text, but not the copies. Retention mends them (few), found through a partial index.
# An edit by such a process leaves the old text's copy, which nothing here can tell apart.
SEARCH_OUT_OF_STEP = (
    "search_text IS NULL OR search_article IS NULL OR (body = '' AND search_text <> '')"
    " OR ((author_name IS NULL AND author_email IS NULL AND author_url IS NULL) <> (search_author IS NULL))"
)


def search_values(values: Mapping[str, Any]) -> dict[str, str | None]:
    """The search columns for a comment's column values (``body`` and those named above, missing ones None):
    for statements that write a comment without the ORM, whose validators keep them otherwise."""
    return {
        "search_text": searchable(values["body"]),
        "search_author": searchable_fields(*(values.get(name) for name in SEARCHED_AUTHOR)),
        "search_article": searchable_fields(*(values.get(name) for name in SEARCHED_ARTICLE)),
    }


def unique_where(name: str, column: str, condition: str) -> Index:
    """A partial unique index: ``column`` unique among the rows where ``condition`` holds (both databases)."""
    return Index(name, column, unique=True, sqlite_where=text(condition), postgresql_where=text(condition))


class CommentStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    HELD = "held"
    REJECTED = "rejected"
    DELETED = "deleted"  # the site deleted it: out of every queue, never told about again


class Outcome(StrEnum):
    APPROVE = "approve"
    HOLD = "hold"
    REJECT = "reject"

    @property
    def comment_status(self) -> CommentStatus:
        return {
            Outcome.APPROVE: CommentStatus.APPROVED,
            Outcome.HOLD: CommentStatus.HELD,
            Outcome.REJECT: CommentStatus.REJECTED,
        }[self]


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    SENDING = "sending"  # leased by a worker until lease_until
    DELIVERED = "delivered"
    DEAD = "dead"  # out of attempts: an operator sees it and may replay it
    DISABLED = "disabled"  # held back: the site answered 410, or its callbacks are paused
    CANCELLED = "cancelled"  # superseded by an edit, or the comment was deleted: never sent


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    callback_url: Mapped[str | None] = mapped_column(String(2000))
    callback_disabled_at: Mapped[datetime | None]
    # Who paused the callbacks (an admin, or the command line); None when the site's own 410 turned them off.
    callbacks_paused_by: Mapped[str | None] = mapped_column(String(320))
    # None means "use the active model's validated default".
    spam_reject_threshold: Mapped[float | None]
    spam_hold_threshold: Mapped[float | None]
    advice_hold_threshold: Mapped[float | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    secrets: Mapped[list["SiteSecret"]] = relationship(
        back_populates="site", order_by="SiteSecret.id", cascade="all, delete-orphan"
    )

    def usable_secrets(self, now: datetime) -> list[str]:
        """Newest first: during a rotation both the new and the retiring secret verify."""
        return usable_secrets(self.secrets, now)


class SecretLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def secret(self) -> str: ...
    @property
    def expires_at(self) -> datetime | None: ...


def usable_secrets(keys: Iterable[SecretLike], now: datetime) -> list[str]:
    """The secrets not expired at ``now``, newest first."""
    live = [s for s in keys if s.expires_at is None or s.expires_at > now]
    return [s.secret for s in sorted(live, key=lambda s: s.id, reverse=True)]


class SiteSecret(Base):
    __tablename__ = "site_secrets"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    secret: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]

    site: Mapped[Site] = relationship(back_populates="secrets")


class Comment(Base):
    __tablename__ = "comments"
    __table_args__ = (
        UniqueConstraint("site_id", "external_id"),
        Index("ix_comments_site_status", "site_id", "status"),
        Index("ix_comments_site_article", "site_id", "article_id"),
        # Comments whose author_network is out of step with author_ip, as processes of the version before
        # migration 0012 leave them while they still serve: retention finds them (few) through this.
        Index(
            "ix_comments_network_out_of_step",
            "id",
            sqlite_where=text(NETWORK_OUT_OF_STEP),
            postgresql_where=text(NETWORK_OUT_OF_STEP),
        ),
        Index(
            "ix_comments_search_out_of_step",
            "id",
            sqlite_where=text(SEARCH_OUT_OF_STEP),
            postgresql_where=text(SEARCH_OUT_OF_STEP),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    external_id: Mapped[str] = mapped_column(String(200))
    article_id: Mapped[str] = mapped_column(String(200))
    article_url: Mapped[str | None] = mapped_column(String(2000))
    article_title: Mapped[str | None] = mapped_column(String(500))
    author_name: Mapped[str | None] = mapped_column(String(200))
    author_email: Mapped[str | None] = mapped_column(String(320), index=True)
    author_url: Mapped[str | None] = mapped_column(String(2000))
    author_ip: Mapped[str | None] = mapped_column(String(45), index=True)
    # Derived from author_ip (`author_network`), kept with it by `_network_of_ip`: what author history matches.
    author_network: Mapped[str | None] = mapped_column(String(45), index=True)
    author_user_agent: Mapped[str | None] = mapped_column(String(1000))
    body: Mapped[str] = mapped_column(Text)
    body_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    parent_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime | None]
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    status: Mapped[str] = mapped_column(String(16), default=CommentStatus.PENDING)
    # The site's own timestamp of the version stored (created_at, then each applied updated_at): an
    # event older than it is stale. Deliveries arrive in any order; the site's clock orders them.
    site_updated_at: Mapped[datetime | None]
    # Bumped when the body changes, so a worker deciding the old text cannot store its decision.
    revision: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    deleted_at: Mapped[datetime | None] = mapped_column(index=True)
    erased_at: Mapped[datetime | None]  # the author's personal data was removed (erasure or retention)
    # The comment as the dashboard's filters search it (models.text.searchable): the body; the author's name,
    # e-mail and URL; the article's id and title. The validators below set them whenever those are set, so that
    # every write through the ORM keeps them in step (edits, erasure and retention, tombstones); a statement
    # that writes a comment without the ORM sets them itself (intake's insert, with search_values). search_author
    # copies personal data: erasure, clearing the fields, clears it. Deferred: only the search reads them.
    # Nullable: processes of the version before migration 0013, serving on while it runs, write rows without.
    search_text: Mapped[str | None] = mapped_column(Text, deferred=True)
    search_author: Mapped[str | None] = mapped_column(Text, deferred=True)
    search_article: Mapped[str | None] = mapped_column(Text, deferred=True)

    site: Mapped[Site] = relationship()
    decisions: Mapped[list["Decision"]] = relationship(
        back_populates="comment", order_by="Decision.id", cascade="all, delete-orphan"
    )

    @validates("author_ip")
    def _network_of_ip(self, _key: str, value: str | None) -> str | None:
        # Here, so that intake's edits, erasure and tests setting the address cannot leave the network stale;
        # statements that write author_ip without the ORM set both (intake's insert, retention's clearing).
        self.author_network = author_network(value) if value else None
        return value

    def search_in_step(self) -> None:
        """Set the search columns from the fields as they are (the validators do it as each is set)."""
        fields = {name: getattr(self, name) for name in ("body", *SEARCHED_AUTHOR, *SEARCHED_ARTICLE)}
        for column, value in search_values(fields).items():
            setattr(self, column, value)

    @validates("body")
    def _search_text_of(self, _key: str, value: str) -> str:
        self.search_text = searchable(value)
        return value

    @validates(*SEARCHED_AUTHOR, *SEARCHED_ARTICLE)
    def _search_columns_of(self, key: str, value: str | None) -> str | None:
        # The other fields as they are now (None on a comment being built that has not got them yet: the
        # validator runs again as each is set, and the last one leaves the column right).
        column, names = (
            ("search_author", SEARCHED_AUTHOR) if key in SEARCHED_AUTHOR else ("search_article", SEARCHED_ARTICLE)
        )
        setattr(self, column, searchable_fields(*(value if name == key else getattr(self, name) for name in names)))
        return value


# The author's personal data on a comment, declared once, here beside the model: intake stores these from the
# webhook's ``author`` (field ``x`` in column ``author_x``), an edit replaces them while the comment is not
# erased, erasure and retention clear them, and their values are what erasure scrubs from derived rows
# (moderation.privacy). Each of those places reads this tuple rather than naming the columns again: a column
# listed by hand in one place and forgotten in another would be stored and never erased. A new personal
# column goes here; tests/test_privacy.py fails while a field of the webhook's Author has no column here.
PERSONAL_COLUMNS = (
    Comment.author_name,
    Comment.author_email,
    Comment.author_url,
    Comment.author_ip,
    Comment.author_user_agent,
)
# The part of them retention clears on every comment after ``RETAIN_PERSONAL_DAYS`` (the rest is kept until the
# comment is closed); also left out of the words erasure strips from explanations (the model never reads them).
# author_network, derived from author_ip, is cleared with it: by retention through this list, by erasure and
# edits through the model's validator.
NETWORK_COLUMNS = (Comment.author_ip, Comment.author_network, Comment.author_user_agent)


class Decision(Base):
    """One row per decision; exactly one per comment has ``is_current`` (enforced by a partial index)."""

    __tablename__ = "decisions"
    __table_args__ = (unique_where("uq_decisions_current_per_comment", "comment_id", "is_current"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    comment_id: Mapped[int] = mapped_column(ForeignKey("comments.id", ondelete="CASCADE"), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    is_current: Mapped[bool] = mapped_column(default=True)
    spam_score: Mapped[float | None]
    advice_score: Mapped[float | None]
    # Values of moderation.reasons (the policy's Reason, or a moderator's reject reason), read back as plain
    # strings; list[Any] is the type the base maps to a JSON column.
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    explanation: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # What the policy knew beyond the scores when the model decided (moderation.policy.Signals as a dict:
    # links, same text on the site, the author's history): the counts behind a duplicate or flood hold as they
    # were then, which the comment's context on the dashboard (counted now) cannot show. Empty for a
    # moderator's decision and for decisions made before migration 0007.
    signals: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # The lines the model's scores were read against (moderation.policy.Thresholds as a dict: the model's, with
    # the site's own values over them as they were then), so that the dashboard draws the lines a decision was
    # made with after a site changes its own. A moderator's decision keeps those of the model's it follows.
    # Empty for a hold without scores and for decisions made before migration 0010.
    thresholds: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    model_version: Mapped[str | None] = mapped_column(String(64))
    decided_by: Mapped[str] = mapped_column(String(320), default="model")  # or "moderator:<e-mail>"
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    comment: Mapped[Comment] = relationship(back_populates="decisions")

    @property
    def by_model(self) -> bool:
        return self.decided_by == "model"


class OutboxMessage(Base):
    """Work the broker must get. Written with the comment; deleted when the work is done.

    The relay republishes rows that are still here some time after their last publish, so a broker
    outage between commit and publish loses nothing.
    """

    __tablename__ = "outbox"
    # One piece of classify work per comment: an edit or `reclassify` finds the waiting one and reuses it.
    __table_args__ = (unique_where("uq_outbox_classify_per_comment", "comment_id", "kind = 'classify'"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    comment_id: Mapped[int] = mapped_column(ForeignKey("comments.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    published_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)  # publishes by the relay
    # Runs of relayed classify work that found the comment waiting and free, at most one per publish by the
    # relay (counted_attempt: the ``attempts`` a run was last counted at): each follows a run that failed or
    # was lost, so a comment that fails every time is held for a person after a few
    # (moderation.decisions.note_relayed_try).
    tries: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    counted_attempt: Mapped[int] = mapped_column(default=0, server_default=text("0"))


class WebhookReceipt(Base):
    """A ``webhook-id`` already accepted from a site: a replay of it (same payload) is answered idempotently."""

    __tablename__ = "webhook_receipts"
    __table_args__ = (UniqueConstraint("site_id", "webhook_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    webhook_id: Mapped[str] = mapped_column(String(200))
    comment_id: Mapped[int] = mapped_column(ForeignKey("comments.id", ondelete="CASCADE"), index=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # SHA-256 (hex) of the delivery's JSON with its keys sorted: a retry of the message carries the same
    # document, so an id reused for another payload is refused, not taken for a retry. None on receipts
    # from before 0005.
    payload_sha256: Mapped[str | None] = mapped_column(String(64))


class CallbackDelivery(Base):
    """One signed callback to a site per decision change, with its retry state."""

    __tablename__ = "callback_deliveries"
    __table_args__ = (Index("ix_callback_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    comment_id: Mapped[int] = mapped_column(ForeignKey("comments.id", ondelete="CASCADE"), index=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id", ondelete="CASCADE"), unique=True)
    event: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]

    site: Mapped[Site] = relationship()


class ModelVersion(Base):
    """A trained model in the registry: its artifact file, checksum and model card."""

    __tablename__ = "model_versions"
    __table_args__ = (
        Index(
            "uq_model_versions_one_active",
            "is_active",
            unique=True,
            sqlite_where=text("is_active"),
            postgresql_where=text("is_active"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64))
    card: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_active: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None]


class Role(StrEnum):
    MODERATOR = "moderator"
    ADMIN = "admin"


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


class Moderator(Base):
    """A person who reviews comments in the dashboard (admins also manage sites, lists and people).

    Dashboard sessions are signed cookies that carry ``session_token``; a session is valid only while the
    token in the row matches. Changing the token ends every session of the account, wherever the cookie is.
    """

    __tablename__ = "moderators"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default=Role.MODERATOR)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    session_token: Mapped[str] = mapped_column(String(64), default=new_session_token)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    def end_sessions(self) -> None:
        """Every signed-in copy of this account's cookie stops working (sign-out, or a cookie was copied)."""
        self.session_token = new_session_token()

    @validates("is_active", "password_hash")
    def _end_sessions_when_changed(self, key: str, value: Any) -> Any:
        # Here rather than in each caller (dashboard, CLI, a rehash at sign-in), so no path that deactivates
        # an account or replaces its password can leave an old session working.
        if getattr(self, key, None) != value:
            self.end_sessions()
        return value


class ModerationAction(Base):
    """The audit trail: who did what to which comment, and the state before and after."""

    __tablename__ = "moderation_actions"

    id: Mapped[int] = mapped_column(primary_key=True)
    comment_id: Mapped[int] = mapped_column(ForeignKey("comments.id", ondelete="CASCADE"), index=True)
    moderator_id: Mapped[int | None] = mapped_column(ForeignKey("moderators.id", ondelete="SET NULL"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    before_status: Mapped[str] = mapped_column(String(16))
    after_status: Mapped[str] = mapped_column(String(16))
    before_decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id", ondelete="SET NULL"), index=True)
    after_decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    moderator: Mapped[Moderator | None] = relationship()


class ListEntry(Base):
    """A block- or allow-list entry (a word, a domain or an author) for one site or, with no site, all."""

    __tablename__ = "list_entries"
    __table_args__ = (UniqueConstraint("list_kind", "field", "value", "site_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    list_kind: Mapped[str] = mapped_column(String(8))  # block | allow
    field: Mapped[str] = mapped_column(String(8))  # word | domain | author
    value: Mapped[str] = mapped_column(String(320))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("moderators.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    site: Mapped[Site | None] = relationship()


class TrainingLabel(Base):
    """A moderator's verdict as a label for retraining (None: the verdict says nothing about that label)."""

    __tablename__ = "training_labels"

    id: Mapped[int] = mapped_column(primary_key=True)
    comment_id: Mapped[int] = mapped_column(ForeignKey("comments.id", ondelete="CASCADE"), unique=True)
    body: Mapped[str] = mapped_column(Text)
    spam: Mapped[bool | None]
    medical_advice: Mapped[bool | None]
    source: Mapped[str] = mapped_column(String(32), default="moderator")
    moderator_id: Mapped[int | None] = mapped_column(ForeignKey("moderators.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
