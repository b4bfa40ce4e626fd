"""Personal data of commenters: erasure on request, and retention limits applied on a schedule.

What is personal here: the author's name, e-mail, URL, IP address and user agent, the columns of ``comments``
declared in ``models.entities.PERSONAL_COLUMNS`` (every function here reads that declaration; none lists them
again). The service keeps them on ``comments`` only, but they leak into other places, each handled by
``erase_comments``:
- ``decisions.explanation`` (words of the author's name can be among the words that drove a score, and the
  text's own words can be those of the e-mail or URL: "quackpills" of quackpills.example), moderators' notes on
  decisions and actions, and a callback's last error text; reasons and callback payloads hold none today (a
  block-listed author is reason ``blocked_term``), but a reason of the form ``author:<value>`` is rewritten all
  the same; nothing else in them is (statuses and reasons must stay);
- block/allow-list entries for the author's e-mail (``erase_author`` removes the site's and returns the ids
  of the all-sites ones, which only an admin removes: any site can send a comment under any address).
The free text among those (``FREE_TEXT_COLUMNS``: notes, errors) can hold any value, and only the values on the
comment are known: so whatever takes a value off a comment scrubs it from that text at once, in the same
transaction. Erasure does; so does retention when it clears IP and user agent (the anonymization that follows,
or an erasure, no longer knows them), and so does an edit that replaces a value (``scrub_replaced_values``).
Explanations the same way: erasure drops the explaining words of the name, e-mail and URL on the comment (and
every word shown as the name's, which needs no value to be found), and an edit that replaces a name, e-mail or URL
drops that value's words from the explanations of all the comment's decisions at once, but the words still in
the new values (those an erasure will find). IP address and user agent are not the author's words
(``IDENTITY_COLUMNS``): their words are never dropped from explanations.
A decision's ``signals`` hold counts, flags and the script only (``moderation.decisions.recorded_signals``
turns text into how many), so nothing there needs erasing.
Training labels hold only the text and the labels; webhook receipts, the outbox and logs hold ids only.
A comment the site deleted loses its text when erased (on request, or by retention), and its training label
with it: the label's copy of the text would otherwise go on being trained on after the site removed it and
the author was erased. A comment still published keeps its label (its text is public on the site anyway).
The moderation statistics (decisions, outcomes, scores, reasons, counts) are kept.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select, text, update
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from models.entities import (
    NETWORK_COLUMNS,
    NETWORK_OUT_OF_STEP,
    PERSONAL_COLUMNS,
    SEARCH_OUT_OF_STEP,
    CallbackDelivery,
    Comment,
    CommentStatus,
    Decision,
    ListEntry,
    ModerationAction,
    Site,
    TrainingLabel,
    author_network,
)
from moderation.features import NAME_WORD_PREFIX, normalize
from moderation.intake import body_fingerprint
from moderation.lists import BLOCKED_AUTHOR
from moderation.sites import SiteKeys

REDACTED = "[erased]"
BATCH = 200
RETENTION_BUDGET = timedelta(minutes=20)  # well inside the task's 30-minute soft time limit
NOTHING = re.compile(r"(?!)")  # the pattern of no values: matches nowhere
MIN_TOKEN = 3  # shorter pieces of a name ("Al", "J.") are too common to strip from explanations
# Who the author is: the personal columns but the network ones. Their words are stripped from explanations (the
# model reads name, e-mail and URL); an IP address's or a user agent's ("100", "windows") would take ordinary ones.
IDENTITY_COLUMNS = tuple(c for c in PERSONAL_COLUMNS if c.key not in {n.key for n in NETWORK_COLUMNS})
# The personal columns retention clears after RETAIN_PERSONAL_DAYS (author_network is derived from author_ip).
NETWORK_PERSONAL_COLUMNS = tuple(c for c in PERSONAL_COLUMNS if c.key in {n.key for n in NETWORK_COLUMNS})
# Free text of rows derived from a comment (each has ``id`` and ``comment_id``), which can hold any of the author's
# values: moderators' notes on decisions and on audit actions, a callback's stored error text. Every value taken
# off a comment is replaced by REDACTED here, by erasure, retention and edits alike.
FREE_TEXT_COLUMNS: tuple[InstrumentedAttribute[str | None], ...] = (
    Decision.note,
    ModerationAction.note,
    CallbackDelivery.last_error,
)


@dataclass(frozen=True, slots=True)
class Erasure:
    comments: int
    list_entries: int  # the site's own entries for the address, removed
    # Entries for every site naming the address: an admin's to remove. The caller tells the admin (the API in
    # its log, the command on the terminal), each where its reader looks, and only once.
    kept_entry_ids: tuple[int, ...] = ()

    @property
    def all_sites_entries_kept(self) -> int:
        return len(self.kept_entry_ids)


@dataclass(frozen=True, slots=True)
class Retention:
    network_cleared: int  # comments whose IP and user agent were cleared
    closed_anonymized: int  # closed comments whose author was anonymized
    networks_mended: int = 0  # comments whose author_network had fallen out of step with author_ip
    search_mended: int = 0  # comments whose search columns had fallen out of step with what they copy


def erase_author(session: Session, site: Site | SiteKeys, email: str, now: datetime) -> Erasure:
    """Remove everything personal about the author with this e-mail on this site; the counts say how much."""
    address = email.strip().casefold()
    if not address:
        return Erasure(0, 0)
    comments = _locked_comments_of(session, site.id, address)
    _restart_classifications(comments)
    erased = erase_comments(session, comments, now)
    # The site's entries for that e-mail go. The all-sites ones stay and are counted: any site can send a
    # comment under any address, so removing them would let one site unblock a spammer for every site; an
    # admin removes them on the lists page. Entries by name are left: a name is not unique.
    for_author = (ListEntry.field == "author") & (ListEntry.value == address)  # values are stored casefolded
    removed = session.execute(
        delete(ListEntry).where(for_author, ListEntry.site_id == site.id).execution_options(synchronize_session=False)
    )
    kept = session.scalars(select(ListEntry.id).where(for_author, ListEntry.site_id.is_(None)).order_by(ListEntry.id))
    return Erasure(erased, int(removed.rowcount), tuple(kept))  # type: ignore[attr-defined]


def erase_comments_of_site(
    session: Session, site: Site | SiteKeys, external_ids: Iterable[str], now: datetime
) -> Erasure:
    """Remove everything personal from these comments of the site (its own comment ids, as sent at intake).

    The way to reach comments the site sent without an e-mail, which ``erase_author`` cannot match. Only
    these comments: others by the same author (same name, or same e-mail) are not looked for, and no list
    entry is removed (``list_entries`` is 0): entries by name are left, as ``erase_author`` leaves them.
    Ids the site does not have, and comments already erased, count nothing: a repeat erases 0 (but for one
    erased by an earlier version that kept the text when the site deleted it: its text goes now, and it counts).
    """
    comments = _locked_unerased_comments(session, site.id, set(external_ids))
    _restart_classifications(comments)
    return Erasure(erase_comments(session, comments, now), 0)


def _locked_unerased_comments(session: Session, site_id: int, external_ids: set[str]) -> list[Comment]:
    if not external_ids:
        return []
    return list(
        session.scalars(
            select(Comment)
            .where(
                Comment.site_id == site_id,
                Comment.external_id.in_(sorted(external_ids)),
                # Erased before, yet deleted with its text kept (by a version before deletion forgot it): the
                # id names it, so its text goes now.
                or_(Comment.erased_at.is_(None), and_(Comment.status == CommentStatus.DELETED, Comment.body != "")),
            )
            .order_by(Comment.id)
            .with_for_update()
        )
    )


ERASURE_SCAN_CHUNK = 5000  # rows of (id, e-mail) read at a time when looking for an author's comments


def _locked_comments_of(session: Session, site_id: int, address: str) -> list[Comment]:
    """The site's comments whose author e-mail casefolds to ``address``, locked against concurrent writers.

    Compared in Python: SQL lower() is ASCII-only on SQLite and locale-bound on PostgreSQL, and neither
    casefolds (``ß`` is ``ss``). Only the id and e-mail columns are scanned; the matches are then locked
    and checked again, in case an edit changed the e-mail in between.
    """
    # Read in chunks (a server-side cursor on PostgreSQL): a site's millions of comments never sit in memory.
    candidates = session.execute(
        select(Comment.id, Comment.author_email)
        .where(Comment.site_id == site_id, Comment.author_email.is_not(None))
        .execution_options(yield_per=ERASURE_SCAN_CHUNK)
    )
    ids = [comment_id for comment_id, stored in candidates if (stored or "").strip().casefold() == address]
    if not ids:
        return []
    locked = session.scalars(select(Comment).where(Comment.id.in_(ids)).order_by(Comment.id).with_for_update())
    return [c for c in locked if c.author_email is not None and c.author_email.strip().casefold() == address]


def _restart_classifications(comments: Iterable[Comment]) -> None:
    """A worker may be classifying one of these right now with the author's name and e-mail in hand.

    A new revision makes its compare-and-swap claim fail, so it stores nothing; the outbox row stays and
    the anonymized comment is classified again.
    """
    for comment in comments:
        if comment.status == CommentStatus.PENDING:
            comment.revision += 1


def erase_comments(session: Session, comments: Iterable[Comment], now: datetime) -> int:
    """Anonymize these comments' authors and scrub their values from every row derived from the comments."""
    count = 0
    for comment in comments:
        values = personal_values(comment)
        identity = [v for v in _values(comment, IDENTITY_COLUMNS) if v]
        for column in PERSONAL_COLUMNS:
            setattr(comment, column.key, None)
        comment.erased_at = now
        if comment.status == CommentStatus.DELETED:
            forget_deleted_text(session, comment)
        # Also with no values left on the comment (an edit cleared the name): its earlier decisions may still
        # hold words of the name ("name: …") and a blocked author's reason, which need no values to be found.
        _scrub_derived_rows(session, comment, values, _tokens(identity))
        count += 1
    session.flush()
    return count


def forget_deleted_text(session: Session, comment: Comment) -> None:
    """The site removed the text; nothing needs it once the author is anonymous, the label's copy neither."""
    comment.body = ""
    comment.body_fingerprint = body_fingerprint("")
    _delete_training_label(session, comment)


def _delete_training_label(session: Session, comment: Comment) -> None:
    session.execute(delete(TrainingLabel).where(TrainingLabel.comment_id == comment.id))


def personal_values(comment: Comment) -> list[str]:
    """The author's personal values on the comment, stripped and distinct, the longest first."""
    return _distinct(_values(comment, PERSONAL_COLUMNS))


def _distinct(fields: Iterable[str | None]) -> list[str]:
    return sorted({v.strip() for v in fields if v and v.strip()}, key=len, reverse=True)


def _values(comment: object, columns: Iterable[InstrumentedAttribute[str | None]]) -> list[str | None]:
    """The columns' values of a comment, or of a row read with those columns."""
    return [getattr(comment, column.key) for column in columns]


def _scrub_derived_rows(session: Session, comment: Comment, values: Sequence[str], tokens: set[str]) -> None:
    """``tokens``: words of the name, e-mail and URL, the only personal fields the model reads."""
    pattern = _pattern(values)
    for decision in session.scalars(select(Decision).where(Decision.comment_id == comment.id)):
        decision.reasons = scrub_reasons(decision.reasons)
        decision.explanation = (
            {}
            if comment.status == CommentStatus.DELETED
            else _scrub_explanation(
                decision.explanation,
                personal=lambda feature: _is_personal(feature, tokens, pattern),
                scrub=lambda text: pattern.sub(REDACTED, text),
            )
        )
        _scrub_free_text_of(decision, pattern)
    for action in session.scalars(select(ModerationAction).where(ModerationAction.comment_id == comment.id)):
        _scrub_free_text_of(action, pattern)
    for delivery in session.scalars(select(CallbackDelivery).where(CallbackDelivery.comment_id == comment.id)):
        delivery.payload = _scrub_payload(delivery.payload)
        _scrub_free_text_of(delivery, pattern)


def _scrub_free_text_of(row: Decision | ModerationAction | CallbackDelivery, pattern: re.Pattern[str]) -> None:
    for column in FREE_TEXT_COLUMNS:
        if column.class_ is type(row):
            setattr(row, column.key, _scrub_text(getattr(row, column.key), pattern))


def scrub_free_text(session: Session, scrubbers: Mapping[int, Callable[[str], str]]) -> int:
    """Rewrite the free text (``FREE_TEXT_COLUMNS``) of the rows derived from these comments, each comment's
    rows with its own scrubber; how many texts changed.

    For many comments at once (a batch of retention): one query per column, reading only the rows with text
    there, through their comment_id index; a row is written only when its text changes, and only while it
    still holds the text read (a callback's error its delivery rewrote meanwhile is not put back).
    """
    if not scrubbers:
        return 0
    changed = 0
    for column in FREE_TEXT_COLUMNS:
        entity = column.class_
        found = session.execute(
            select(entity.id, entity.comment_id, column).where(
                entity.comment_id.in_(sorted(scrubbers)), column.is_not(None)
            )
        )
        for row_id, comment_id, before in found.all():
            after = scrubbers[comment_id](before)
            if after != before:
                session.execute(
                    update(entity)
                    .where(entity.id == row_id, column == before)
                    .values({column.key: after})
                    .execution_options(synchronize_session=False)
                )
                changed += 1
    return changed


@dataclass(frozen=True, slots=True)
class AuthorValues:
    """The author's values on a comment at one moment, each list stripped, distinct and the longest first."""

    personal: list[str]  # every personal column's
    identity: list[str]  # the name's, e-mail's and URL's (``IDENTITY_COLUMNS``), whose words explanations drop


def author_values(comment: Comment) -> AuthorValues:
    return AuthorValues(personal_values(comment), _distinct(_values(comment, IDENTITY_COLUMNS)))


def scrub_replaced_values(session: Session, comment: Comment, earlier: AuthorValues) -> None:
    """After an edit replaced the author's values (``earlier``: ``author_values`` before it): those no longer
    on the comment are scrubbed from what was derived from it, as an erasure would have scrubbed them; once off
    the comment, no erasure or retention would know them. The free text loses each replaced value, and the
    explanations of the comment's decisions the words of a replaced name, e-mail or URL. The values still on
    it stay, also where a replaced one is part of one ("Zeb" of "Zeb Quack"), for an erasure to find whole;
    so do the explaining words still in them."""
    current = author_values(comment)
    gone = _replaced(earlier.personal, current.personal)
    if not gone:
        return
    scrub = _scrubber(gone, keep=current.personal)
    scrub_free_text(session, {comment.id: scrub})
    gone_identity = _replaced(earlier.identity, current.identity)
    if gone_identity:  # not for an IP address or a user agent alone: explanations hold no words of theirs
        _drop_replaced_words(session, comment, gone_identity, current.identity, scrub)


def _replaced(earlier: Sequence[str], current: Sequence[str]) -> list[str]:
    still = {value.casefold() for value in current}
    return [value for value in earlier if value.casefold() not in still]


def _drop_replaced_words(
    session: Session, comment: Comment, gone: Sequence[str], current: Sequence[str], scrub: Callable[[str], str]
) -> None:
    """Drop from the comment's decisions' explanations the words an erasure would have dropped for the ``gone``
    identity values, but those an erasure will drop for a ``current`` one (so found by its own test, not by a
    looser one: a word kept here that no erasure finds would stay for ever). A word only in a name ("name: …")
    is dropped unless the current values hold it: erasure drops every such word, needing no value to find it,
    so one of a name replaced earlier goes too."""
    held = _words(current)
    tokens, pattern = _tokens(gone), _pattern(gone)
    kept_tokens, kept_pattern = _tokens(current), _pattern(current)

    def replaced(feature: str) -> bool:
        if feature.startswith(NAME_WORD_PREFIX):
            return not _words([feature.removeprefix(NAME_WORD_PREFIX)]) <= held
        return _is_personal(feature, tokens, pattern) and not _is_personal(feature, kept_tokens, kept_pattern)

    for decision in session.scalars(select(Decision).where(Decision.comment_id == comment.id)):
        scrubbed = _scrub_explanation(decision.explanation, personal=replaced, scrub=scrub)
        if scrubbed != decision.explanation:
            decision.explanation = scrubbed


def _words(values: Iterable[str]) -> set[str]:
    """Every word of the values, as they are and as the classifier normalizes them (explanations show the
    latter: "name: john" for "J0hn")."""
    forms = (form for value in values for form in (value.casefold(), normalize(value)))
    return {word for form in forms for word in re.findall(r"\w+", form)}


def _scrubber(values: Sequence[str], keep: Sequence[str] = ()) -> Callable[[str], str]:
    """Replaces ``values`` (whole, ignoring case) by REDACTED, leaving ``keep`` as it is, also where a value is
    part of it."""
    pattern = _pattern([*values, *keep])
    kept = {value.casefold() for value in keep}
    return lambda text: pattern.sub(lambda m: m.group(0) if m.group(0).casefold() in kept else REDACTED, text)


def scrub_reasons(reasons: Iterable[str]) -> list[str]:
    """``author:<e-mail or name>`` (a block-listed author) is the only reason naming a person.

    Only those are rewritten: a regex over every reason would let an author named ``spam`` or ``held``
    rewrite real reasons, and with them the statistics.
    """
    return [BLOCKED_AUTHOR + REDACTED if reason.startswith(BLOCKED_AUTHOR) else reason for reason in reasons]


def _scrub_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A callback payload's only personal values are in its reasons; statuses and outcomes stay as they were."""
    data = payload.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("reasons"), list):
        return payload
    return {**payload, "data": {**data, "reasons": scrub_reasons(data["reasons"])}}


# Where a value stands alone: not inside a word. An IP address is not inside a longer address either, which goes
# on past a ':' or '.' ("2001:db8::1" is not "2001:db8::1:5", "1:2001:db8::1" or "::1" of "fe80::1"); an IPv4
# address still stands alone before a port ("198.51.100.7:8080") and after "::ffff:", its IPv4-mapped spelling
# (the same address, which the webhook stores as IPv4), and any address before a sentence's full stop. An IPv6
# address goes on only into a whole group of one to four hex digits: after a label ("remote:", "IPv6:", "source:")
# or before a word ("...::1:details") it stands alone, though their letters are hex digits.
ALONE_WORD = (r"(?<!\w)", r"(?!\w)")
ALONE_IPV4 = (r"(?<!\w)(?<!\d\.)", r"(?!\w)(?!\.\d)")
ALONE_IPV6 = (
    r"(?<!\w)" + "".join(rf"(?<!\b[0-9a-f]{{{digits}}}:)" for digits in range(1, 5)) + r"(?<!::)",
    r"(?!\w)(?!:[0-9a-f]{1,4}(?!\w))(?!\.\d)",
)


def _pattern(values: Sequence[str]) -> re.Pattern[str]:
    if not values:
        return NOTHING
    # The longest first: of values sharing a start ("Zeb", "Zeb Quack"), the whole one is matched.
    alternatives = "|".join(_alone(v) for v in sorted(values, key=len, reverse=True))
    return re.compile(alternatives, re.IGNORECASE)


def _alone(value: str) -> str:
    """The pattern of ``value`` where it stands alone (``ALONE_WORD``, ``ALONE_IPV4``, ``ALONE_IPV6``)."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        before, after = ALONE_WORD
    else:
        before, after = ALONE_IPV4 if address.version == 4 else ALONE_IPV6
    return f"{before}{re.escape(value)}{after}"


def _tokens(values: Sequence[str]) -> set[str]:
    return {token for value in values for token in re.findall(r"\w+", value.casefold()) if len(token) >= MIN_TOKEN}


def _scrub_text(text: str | None, pattern: re.Pattern[str]) -> str | None:
    return pattern.sub(REDACTED, text) if text else text


def _scrub_json(value: Any, scrub: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [_scrub_json(item, scrub) for item in value]
    if isinstance(value, dict):
        return {key: _scrub_json(item, scrub) for key, item in value.items()}
    return value


def _scrub_explanation(
    explanation: dict[str, Any], *, personal: Callable[[str], bool], scrub: Callable[[str], str]
) -> dict[str, Any]:
    """Drop the explaining words (``{"feature": …, "weight": …}`` items, listed per label) that are ``personal``;
    keep the rest. Anything else in it has its text put through ``scrub``."""
    kept: dict[str, Any] = {}
    for label, items in explanation.items():
        if not isinstance(items, list):
            kept[label] = _scrub_json(items, scrub)
            continue
        kept[label] = [
            item for item in items if not (isinstance(item, dict) and personal(str(item.get("feature", ""))))
        ]
    return kept


def _is_personal(feature: str, tokens: set[str], pattern: re.Pattern[str]) -> bool:
    if feature.startswith(NAME_WORD_PREFIX):  # from the name whatever its length ("Al" is under MIN_TOKEN)
        return True
    words = set(re.findall(r"\w+", feature.casefold()))
    return bool(words & tokens) or pattern.search(feature) is not None


def apply_retention(
    sessions: sessionmaker[Session],
    now: datetime,
    personal_days: int,
    closed_days: int,
    *,
    batch: int = BATCH,
    budget: timedelta = RETENTION_BUDGET,
) -> Retention:
    """Clear IP and user agent after ``personal_days``; anonymize closed comments after ``closed_days``.

    Closed: approved or rejected (decided at least ``closed_days`` ago) or deleted (that long ago). Held and
    pending comments wait for their decision. 0 days turns a limit off.

    Each batch is its own short transaction, so intake and workers wait for one batch at most, and work done
    stays done. Each limit gets at least one batch per run; after ``budget`` the run stops and the next
    scheduled run continues where this one stopped.
    """
    deadline = time.monotonic() + budget.total_seconds()
    cleared = anonymized = 0
    mended = _in_batches(sessions, deadline, lambda session: _mend_networks_batch(session, batch))
    searches = _in_batches(sessions, deadline, lambda session: _mend_search_batch(session, batch))
    if personal_days > 0:
        cutoff = now - timedelta(days=personal_days)
        cleared = _in_batches(sessions, deadline, lambda session: _clear_network_batch(session, cutoff, batch))
    if closed_days > 0:
        cutoff = now - timedelta(days=closed_days)
        anonymized = _in_batches(sessions, deadline, lambda session: _anonymize_batch(session, now, cutoff, batch))
    return Retention(cleared, anonymized, mended, searches)


def _in_batches(sessions: sessionmaker[Session], deadline: float, one_batch: Callable[[Session], int]) -> int:
    """Run ``one_batch`` in a transaction of its own until it finds nothing more or time is up."""
    total = 0
    while True:
        with sessions.begin() as session:
            done = one_batch(session)
        total += done
        if done == 0 or time.monotonic() >= deadline:
            return total


def _mend_networks_batch(session: Session, batch: int) -> int:
    """Networks out of step with their address: cleared where the address was cleared, set where none was.

    Only processes of the version before migration 0012, serving on while it runs, leave such rows: their
    erasure and retention clear author_ip alone, their intake stores no network.
    """

    def mend(comment: Comment) -> None:
        comment.author_network = author_network(comment.author_ip) if comment.author_ip else None

    return _mend_out_of_step(session, NETWORK_OUT_OF_STEP, mend, batch)


def _mend_search_batch(session: Session, batch: int) -> int:
    """Search columns out of step with the fields they copy (``SEARCH_OUT_OF_STEP``): set from those fields.

    Only processes of the version before migration 0013, serving on while it runs, leave such rows: their intake
    stores none (the search cannot find those comments), their erasure and retention clear the author, and a
    deleted comment's text, but not the copies the search reads.
    """
    return _mend_out_of_step(session, SEARCH_OUT_OF_STEP, Comment.search_in_step, batch)


def _mend_out_of_step(session: Session, predicate: str, mend: Callable[[Comment], None], batch: int) -> int:
    """Up to ``batch`` comments matching ``predicate`` (a partial index's, written as the index's is, so that
    it applies), each mended. Locked, so that an edit meanwhile is not overwritten with values of the old fields."""
    comments = session.scalars(
        select(Comment).where(text(predicate)).order_by(Comment.id).limit(batch).with_for_update()
    ).all()
    for comment in comments:
        mend(comment)
    return len(comments)


def _clear_network_batch(session: Session, cutoff: datetime, batch: int) -> int:
    """Up to ``batch`` comments received before ``cutoff`` that still hold IP or user agent: cleared, and their
    values scrubbed from the free text derived from them, as an erasure scrubs them (afterwards nothing knows
    them: the anonymization, or an erasure, finds them gone from the comment). One statement clears the batch,
    one query per free-text column reads its notes and errors. The author's name, e-mail and URL stay whole where
    one holds a cleared value (a URL on the author's own IP), for the anonymization or an erasure to find. Locked
    as the clearing UPDATE locks them (FOR NO KEY UPDATE), from the read on, so that an edit meanwhile cannot
    bring a value that is cleared unscrubbed.
    """
    found = session.execute(
        select(Comment.id, *NETWORK_PERSONAL_COLUMNS, *IDENTITY_COLUMNS)
        .where(
            Comment.received_at < cutoff,
            or_(*(column.is_not(None) for column in NETWORK_COLUMNS)),
        )
        .order_by(Comment.id)
        .limit(batch)
        .with_for_update(key_share=True)
    ).all()
    if found:
        session.execute(
            update(Comment)
            .where(Comment.id.in_([row[0] for row in found]))
            .values({column.key: None for column in NETWORK_COLUMNS})
            .execution_options(synchronize_session=False)
        )
        scrubbers = {
            row.id: _scrubber(held, keep=_distinct(_values(row, IDENTITY_COLUMNS)))
            for row in found
            if (held := _distinct(_values(row, NETWORK_PERSONAL_COLUMNS)))
        }
        scrub_free_text(session, scrubbers)
    return len(found)


def _anonymize_batch(session: Session, now: datetime, cutoff: datetime, batch: int) -> int:
    decided_before = select(Decision.comment_id).where(Decision.is_current, Decision.created_at < cutoff)
    closed = (
        select(Comment)
        .where(
            Comment.erased_at.is_(None),
            or_(
                and_(
                    Comment.status.in_([CommentStatus.APPROVED, CommentStatus.REJECTED]),
                    Comment.id.in_(decided_before),
                ),
                and_(Comment.status == CommentStatus.DELETED, Comment.deleted_at < cutoff),
            ),
        )
        .order_by(Comment.id)
        .limit(batch)
        .with_for_update()
    )
    return erase_comments(session, list(session.scalars(closed)), now)
