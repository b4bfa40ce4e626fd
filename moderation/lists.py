"""Moderator-managed block and allow lists (words, domains, authors), per site or for all sites."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from models.db import flush_unless_taken
from models.entities import Comment, ListEntry, Site
from moderation.features import find_urls, url_domain, visible
from moderation.intake import storable

KINDS = ("block", "allow")
FIELDS = ("word", "domain", "author")
BLOCKED_AUTHOR = "author:"  # how a block-listed author appears among blocked terms: it names a person
EMAIL_ADDRESS_RE = re.compile(r"[^@\s]+@[^@\s]+")  # how an allowed author is named: someone@somewhere
MAX_LIST_VALUE_CHARS = 320  # list_entries.value
DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")


class ListError(ValueError):
    """An entry that cannot be added (bad kind, field or value, or a duplicate)."""


@dataclass(frozen=True, slots=True)
class ListMatch:
    blocked_terms: tuple[str, ...]
    author_allowed: bool


def normalized_value(field: str, value: str) -> str:
    try:
        storable(value)  # the rule intake applies to every text (PostgreSQL holds no NUL)
    except ValueError as error:
        raise ListError(f"a list entry's value {error}") from None
    value = visible(value).strip().casefold()  # a word copied from a dressed comment, as the lists read comments
    if field == "domain":
        value = url_domain(value) if "/" in value else value.removeprefix("www.")
    # Before the domain's check, which quotes the value: the Lists page shows the error in the page.
    if not value or len(value) > MAX_LIST_VALUE_CHARS:
        raise ListError(f"a list entry needs a value of 1-{MAX_LIST_VALUE_CHARS} characters")
    if field == "domain" and not DOMAIN_RE.match(value):
        raise ListError(f"{value!r} is not a domain name")
    return value


def add_entry(
    session: Session, kind: str, field: str, value: str, site_id: int | None, created_by: int | None, now: datetime
) -> ListEntry:
    if kind not in KINDS or field not in FIELDS:
        raise ListError(f"list must be one of {KINDS} and field one of {FIELDS}")
    if kind == "allow" and field == "word":
        raise ListError("allow lists hold authors and domains; a word cannot make a comment safe")
    value = normalized_value(field, value)
    if site_id is not None and session.get(Site, site_id) is None:
        raise ListError(f"there is no site with id {site_id}")
    if kind == "allow" and field == "author" and not EMAIL_ADDRESS_RE.fullmatch(value):
        raise ListError(
            "an allowed author is named by e-mail address: a name is what anyone types, so it cannot vouch for them"
        )
    if listed_entry(session, kind, field, value, site_id) is not None:
        raise ListError(f"{value!r} is already on that list")
    entry = ListEntry(list_kind=kind, field=field, value=value, site_id=site_id, created_by=created_by, created_at=now)
    session.add(entry)
    # Added by another admin since the check (for one site: the unique constraint holds NULLs distinct, so one
    # for all sites is not caught here; the foreign keys hold, as no site or account is ever deleted).
    flush_unless_taken(session, ListError(f"{value!r} is already on that list"))
    return entry


def listed_entry(session: Session, kind: str, field: str, value: str, site_id: int | None) -> int | None:
    """The id of the entry for ``value`` (normalized) on that list for that site (None: for all sites), if any."""
    # NULL site_id (all sites) is not caught by the unique constraint on every backend: checked here too.
    return session.scalar(
        select(ListEntry.id).where(
            ListEntry.list_kind == kind,
            ListEntry.field == field,
            ListEntry.value == value,
            ListEntry.site_id.is_(None) if site_id is None else ListEntry.site_id == site_id,
        )
    )


def entries_for_site(session: Session, site_id: int) -> list[ListEntry]:
    return list(
        session.scalars(select(ListEntry).where(or_(ListEntry.site_id.is_(None), ListEntry.site_id == site_id)))
    )


def _domains_of(comment: Comment) -> set[str]:
    domains = {url_domain(url) for url in find_urls(comment.body)}
    if comment.author_url:
        domains.add(url_domain(visible(comment.author_url)))
    return {d for d in domains if d}


def _domain_matches(domain: str, listed: str) -> bool:
    return domain == listed or domain.endswith("." + listed)


# A dotted name in ASCII, between anything that cannot be part of one (CJK text runs into names without spaces).
DOTTED_NAME_RE = re.compile(r"(?<![a-z0-9-])[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63}){1,10}")


def _named_domains(body: str) -> set[str]:
    """Every domain the (case-folded) text names, link or not, with those above it (shop.matratzen.de: also
    matratzen.de): the link finder leaves out bare names with endings that are also words. One pass per
    comment, whatever the number of list entries."""
    named: set[str] = set()
    for match in DOTTED_NAME_RE.finditer(body):
        labels = match.group(0).split(".")
        named.update(".".join(labels[start:]) for start in range(len(labels) - 1))
    return named


def can_allow(entry: ListEntry) -> bool:
    """Whether an allow-list entry can match at all: one naming an author by anything but a whole e-mail
    address (a name, refused since, kept from before) never does, even if a commenter types it as theirs."""
    return not (entry.list_kind == "allow" and entry.field == "author" and not EMAIL_ADDRESS_RE.fullmatch(entry.value))


def entries_allowing_nobody(session: Session) -> list[ListEntry]:
    """Allow entries kept from before only whole addresses could allow (see ``can_allow``), oldest first."""
    authors = select(ListEntry).where(ListEntry.list_kind == "allow", ListEntry.field == "author")
    return [entry for entry in session.scalars(authors.order_by(ListEntry.id)) if not can_allow(entry)]


def match_lists(entries: list[ListEntry], comment: Comment) -> ListMatch:
    """What the lists say about a comment: the blocked terms it contains, and whether its author is allowed.

    Anything about the author blocks (name, e-mail, their address's domain or their URL's). Only the e-mail
    address allows: a name is public on the site and a URL is whatever the commenter types, so copying an
    allowed regular's would skip the spam reasons; the address is not shown to readers. It is still what
    the site sends: an allowed domain trusts anyone who gives an address there, unless the site verifies them.
    """
    # Every field read without the characters drawn as nothing (features.visible), as the models read them.
    body = visible(comment.body).casefold()
    domains = _domains_of(comment)
    email = visible(comment.author_email or "").strip().casefold()
    email_domain = email.rpartition("@")[2] if "@" in email else ""
    author_ids = {v for v in (email, visible(comment.author_name or "").strip().casefold()) if v}
    author_domains = {d for d in (email_domain, url_domain(visible(comment.author_url or ""))) if d}
    blocked: list[str] = []
    allowed = False
    named: set[str] | None = None  # worked out for the first blocked domain, if any
    for entry in entries:
        value = visible(entry.value)  # an entry saved before values were stored so
        if entry.field == "author" and entry.list_kind == "allow":
            hit = bool(email) and can_allow(entry) and value == email
        elif entry.field == "author":
            hit = value in author_ids
        elif entry.field == "domain" and entry.list_kind == "block":
            named = _named_domains(body) if named is None else named
            hit = value in named or any(_domain_matches(d, value) for d in domains | author_domains)
        elif entry.field == "domain":  # allowed: only the author's e-mail address, never a domain they mention
            hit = bool(email_domain) and _domain_matches(email_domain, value)
        else:
            hit = re.search(rf"(?<!\w){re.escape(value)}(?!\w)", body) is not None
        if hit and entry.list_kind == "block":
            blocked.append(f"{BLOCKED_AUTHOR}{entry.value}" if entry.field == "author" else entry.value)
        elif hit:
            allowed = True
    return ListMatch(tuple(sorted(set(blocked))), allowed and not blocked)
