"""Read-only queries behind the queue and comment pages: filters, counts, author history, duplicates, parents."""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, String, and_, cast, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from models.entities import (
    Comment,
    CommentStatus,
    Decision,
    ModelVersion,
    ModerationAction,
    Site,
    author_network,
)
from models.text import searchable
from moderation import registry
from moderation.decisions import AUTHOR_IP_WINDOW
from moderation.policy import Thresholds
from moderation.reasons import ALL_REASONS

QUEUES = {
    "held": CommentStatus.HELD,
    "approved": CommentStatus.APPROVED,
    "rejected": CommentStatus.REJECTED,
    "all": None,
}
SORTS = ("oldest", "newest", "risk")
PAGE_SIZE = 25
MAX_PAGE = 1_000_000  # far past any queue; an offset the database can still take

log = logging.getLogger(__name__)


@dataclass
class Filters:
    queue: str = "held"
    sort: str = "oldest"
    text: str = ""
    author: str = ""
    article: str = ""
    site: str = ""
    reason: str = ""
    score: str = "any"  # any | spam | medical_advice
    score_min: float | None = None
    score_max: float | None = None
    date_from: date | None = None
    date_to: date | None = None
    page: int = 1
    # what the query string asked for that could not be applied, in the page's words (shown, never silent)
    problems: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, args: Any) -> Filters:
        problems: list[str] = []

        def given(name: str) -> str:
            return str(args.get(name, "")).replace("\x00", "").strip()  # no stored text holds a NUL

        def number(name: str, label: str) -> float | None:
            if not given(name):
                return None
            try:
                value = float(given(name))
            except ValueError:
                value = math.nan
            if not 0.0 <= value <= 1.0:  # NaN fails this too
                problems.append(f"{label} \u201c{given(name)[:40]}\u201d is not a number from 0 to 1: not applied")
                return None
            return value

        def day(name: str, label: str) -> date | None:
            if not given(name):
                return None
            try:
                return date.fromisoformat(given(name))
            except ValueError:
                problems.append(f"{label} \u201c{given(name)[:40]}\u201d is not a date (YYYY-MM-DD): not applied")
                return None

        def choice(name: str, allowed: Iterable[str], default: str, label: str) -> str:
            value = given(name)
            if not value:
                return default
            if value not in allowed:
                problems.append(f"there is no {label} \u201c{value[:40]}\u201d: {default or 'any'} instead")
                return default
            return value

        page = 1
        if given("page"):
            try:
                page = min(MAX_PAGE, max(1, int(given("page"))))
            except ValueError:
                problems.append(f"the page \u201c{given('page')[:40]}\u201d is not a whole number: the first instead")
        score_min, score_max = number("score_min", "the minimum score"), number("score_max", "the maximum score")
        if score_min is not None and score_max is not None and score_min > score_max:
            problems.append("the minimum score is above the maximum, so no comment could match")
        date_from, date_to = day("date_from", "the first date"), day("date_to", "the last date")
        if date_from is not None and date_to is not None and date_from > date_to:
            problems.append("the first date is after the last, so no comment could match")
        return cls(
            queue=choice("queue", QUEUES, "held", "queue"),
            sort=choice("sort", SORTS, "oldest", "order"),
            text=given("text")[:200],
            author=given("author")[:200],
            article=given("article")[:200],
            site=given("site")[:100],
            reason=choice("reason", ALL_REASONS, "", "reason"),
            score=choice("score", ("any", "spam", "medical_advice"), "any", "score"),
            score_min=score_min,
            score_max=score_max,
            date_from=date_from,
            date_to=date_to,
            page=page,
            problems=tuple(problems),
        )

    @property
    def narrowed(self) -> bool:
        """Whether anything but the queue, the order and the page limits which comments are listed."""
        return bool(
            self.text
            or self.author
            or self.article
            or self.site
            or self.reason
            or self.score_min is not None
            or self.score_max is not None
            or self.date_from
            or self.date_to
        )

    def args(self, **changes: Any) -> dict[str, Any]:
        """Query-string arguments for a link that keeps these filters, with some changed."""
        values = {
            "queue": self.queue,
            "sort": self.sort,
            "text": self.text,
            "author": self.author,
            "article": self.article,
            "site": self.site,
            "reason": self.reason,
            "score": self.score if self.score != "any" else "",
            "score_min": "" if self.score_min is None else self.score_min,
            "score_max": "" if self.score_max is None else self.score_max,
            "date_from": self.date_from.isoformat() if self.date_from else "",
            "date_to": self.date_to.isoformat() if self.date_to else "",
        }
        values.update(changes)
        return {k: v for k, v in values.items() if v not in ("", None)}


def _like(value: str) -> str:
    """A LIKE pattern finding ``value`` anywhere, its own wildcards matching only themselves (escape "\\")."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Spammers put characters drawn as nothing between a word's letters ("v\u200bi\u200ba\u200bg\u200br\u200ba",
# "pi\u00adlls", a direction mark, a tag character): readers see the word, a plain LIKE on the text does not. The
# search columns hold the fields as readers see them, folded (models.text.searchable), written as comments are
# stored: no function runs on every comment at each search, and none of SQLite's or PostgreSQL's is needed.
def _matches(
    typed: str, searched: InstrumentedAttribute[str | None], *raw: InstrumentedAttribute[Any]
) -> ColumnElement[bool]:
    """``typed`` in the search column ``searched`` (made of the fields ``raw``), both read the same way."""
    term = searchable(typed)
    if not term:  # nothing but such characters: the comments whose fields hold them, not every comment
        pattern = _like(typed.lower())
        return or_(*(func.lower(column).like(pattern, escape="\\") for column in raw))
    return searched.like(_like(term), escape="\\")


def _filtered(query: Select[Any], filters: Filters, current: Any) -> Select[Any]:
    if filters.text:
        query = query.where(_matches(filters.text, Comment.search_text, Comment.body))
    if filters.author:
        author = (Comment.author_name, Comment.author_email, Comment.author_url)
        query = query.where(
            or_(_matches(filters.author, Comment.search_author, *author), *_same_network(filters.author))
        )
    if filters.article:
        query = query.where(
            _matches(filters.article, Comment.search_article, Comment.article_id, Comment.article_title)
        )
    if filters.site:
        query = query.where(Site.name == filters.site)
    if filters.reason:
        query = query.where(cast(current.reasons, String).like(f'%"{filters.reason}"%'))
    columns = {"spam": [current.spam_score], "medical_advice": [current.advice_score]}.get(
        filters.score, [current.spam_score, current.advice_score]
    )
    if filters.score_min is not None or filters.score_max is not None:
        query = query.where(or_(*(_in_range(c, filters.score_min, filters.score_max) for c in columns)))
    if filters.date_from:
        query = query.where(Comment.received_at >= datetime.combine(filters.date_from, time.min, UTC))
    if filters.date_to and filters.date_to < date.max:  # the last day there is has no day after it
        query = query.where(Comment.received_at < datetime.combine(filters.date_to + timedelta(days=1), time.min, UTC))
    return query


def _same_network(typed: str) -> list[ColumnElement[bool]]:
    """An address typed in the author filter finds the comments the author history would count by it: an IPv6
    address its whole /64 (one subscriber's, whose address changes), an IPv4 one itself; in any spelling, as
    addresses are stored in one (an IPv4-mapped one as IPv4). Anything else finds by name, e-mail or URL only."""
    try:
        address = ipaddress.ip_address(typed)
    except ValueError:
        return []
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:  # no stored address has a zone ("%eth0")
            return []
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
    return [Comment.author_network == author_network(str(address))]


def _in_range(score: Any, low: float | None, high: float | None) -> ColumnElement[bool]:
    """One score within [low, high]: with "Any score", one of the two scores must lie in the range itself
    (one above the minimum and the other below the maximum is not a match)."""
    bounds = [score >= low] if low is not None else []
    if high is not None:
        bounds.append(score <= high)
    return and_(*bounds)


def queue_counts(session: Session, filters: Filters | None = None) -> dict[str, int]:
    """Comments per queue; with filters, only those the filters match (the tabs then say what each holds of them)."""
    query: Select[Any] = select(Comment.status, func.count(Comment.id))  # type: ignore[assignment]
    if filters is not None and filters.narrowed:
        current = aliased(Decision)
        query = query.join(Site, Site.id == Comment.site_id).outerjoin(
            current, (current.comment_id == Comment.id) & current.is_current
        )
        query = _filtered(query, filters, current)
    counts: dict[str, int] = dict(session.execute(query.group_by(Comment.status)).all())
    result = {name: counts.get(status, 0) for name, status in QUEUES.items() if status is not None}
    result["all"] = sum(n for status, n in counts.items() if status != CommentStatus.DELETED)
    return result


@dataclass
class QueuePage:
    items: list[tuple[Comment, Decision | None]]
    total: int
    page: int
    pages: int


def _listed(filters: Filters) -> tuple[Select[Any], Any]:
    """The comments a queue page lists, with their current decisions, in no order; and that decision's alias."""
    current = aliased(Decision)
    query: Select[Any] = (
        select(Comment, current)  # type: ignore[assignment]
        .join(Site, Site.id == Comment.site_id)
        .outerjoin(current, (current.comment_id == Comment.id) & current.is_current)
    )
    status = QUEUES[filters.queue]
    if status is not None:
        query = query.where(Comment.status == status)
    else:  # a comment the site deleted is in no queue, "all" included
        query = query.where(Comment.status != CommentStatus.DELETED)
    return _filtered(query, filters, current), current


def is_listed(session: Session, filters: Filters, comment_id: int) -> bool:
    """Whether the queue page of ``filters`` lists the comment (after an action, it may have left it)."""
    query, _current = _listed(filters)
    return session.scalar(select(func.count()).select_from(query.where(Comment.id == comment_id).subquery())) == 1


def queue_page(session: Session, filters: Filters) -> QueuePage:
    query, current = _listed(filters)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    if filters.sort == "risk":
        risk: Any = func.coalesce(func.greatest(current.spam_score, current.advice_score), 0.0)
        if session.get_bind().dialect.name == "sqlite":
            risk = func.max(func.coalesce(current.spam_score, 0.0), func.coalesce(current.advice_score, 0.0))
        query = query.order_by(risk.desc(), Comment.id)
    elif filters.sort == "newest":
        query = query.order_by(Comment.received_at.desc(), Comment.id.desc())
    else:
        query = query.order_by(Comment.received_at, Comment.id)
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(filters.page, pages)
    rows = session.execute(query.limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)).all()
    return QueuePage(list(rows), total, page, pages)


@dataclass
class AuthorHistory:
    approved: int = 0
    rejected: int = 0
    held: int = 0
    last_day: int = 0


@dataclass
class Context:
    """What a moderator sees beside a comment."""

    history: AuthorHistory = field(default_factory=AuthorHistory)
    same_text: list[Comment] = field(default_factory=list)
    # the lines its scores are read against: those its decision was made with (decision_lines)
    lines: Thresholds = field(default_factory=Thresholds)
    lines_recorded: bool = False  # False: the deciding model's, with the site's values of today

    @property
    def spam_bar(self) -> Bar:
        return Bar.at(self.lines.spam_hold, self.lines.spam_reject)

    @property
    def advice_bar(self) -> Bar:
        return Bar.at(self.lines.advice_hold, self.lines.advice_hold)


# A <meter> whose optimum is below ``low`` is good up to and including ``low``, so-so up to and including
# ``high`` and bad above; the policy holds and rejects AT its lines. So the bounds sit a millionth below the
# lines (a score that close below one takes its colour), and the bar starts (min, and its optimum) two
# millionths below 0, so that a line at 0 still has its bound above the optimum.
BAR_NUDGE = 1e-6


@dataclass(frozen=True, slots=True)
class Bar:
    """A score bar's ``min`` (its optimum too), ``low`` and ``high``: amber at ``hold``, red at ``reject``."""

    floor: float
    low: float
    high: float

    @classmethod
    def at(cls, hold: float, reject: float) -> Bar:
        return cls(-2 * BAR_NUDGE, hold - BAR_NUDGE, reject - BAR_NUDGE)


def model_lines(session: Session, decisions: Iterable[Decision | None]) -> dict[str | None, Thresholds]:
    """The thresholds of the models that made these decisions (a decision's scores are read against the lines
    of the model that gave them) and, under None, the active model's (the defaults before any is active), for
    a comment not decided yet or by a version no longer registered."""
    named = {d.model_version for d in decisions if d is not None and d.model_version}
    cards = session.execute(select(ModelVersion.version, ModelVersion.card).where(ModelVersion.version.in_(named)))
    active = registry.active_version(session)
    lines: dict[str | None, Thresholds] = {None: Thresholds.of_card(active.card if active is not None else {})}
    lines |= {version: Thresholds.of_card(card) for version, card in cards}
    return lines


def lines_of(lines: dict[str | None, Thresholds], decision: Decision | None) -> Thresholds:
    return lines.get(decision.model_version if decision is not None else None, lines[None])


def decision_lines(
    lines: dict[str | None, Thresholds], decision: Decision | None, site: Site
) -> tuple[Thresholds, bool]:
    """The lines a comment's scores are drawn against, and whether its decision recorded them when it was
    made; for a decision made before they were recorded, or a hold without scores, or none yet: its model's
    with the site's current values over them (``lines``: from ``model_lines``)."""
    recorded = _recorded_lines(decision)
    return (recorded, True) if recorded is not None else (site_lines(lines_of(lines, decision), site), False)


def _recorded_lines(decision: Decision | None) -> Thresholds | None:
    if decision is None or not decision.thresholds:
        return None
    try:
        return Thresholds(**decision.thresholds)
    except (TypeError, ValueError):  # only a hand edit of the row makes it so: draw the lines known today
        log.warning("decision %s records lines that cannot be drawn: %r", decision.id, decision.thresholds)
        return None


def site_lines(model: Thresholds, site: Site) -> Thresholds:
    """``model``'s lines with the site's own values over them; the model's alone when the site's stored values
    are out of range (only an edit of the database by hand makes them so). The policy refuses such values,
    so that site's comments are held as not_classified: the pages that show them must not fail too."""
    try:
        return model.of_site(site)
    except ValueError as problem:
        log.warning("site %s has thresholds that cannot be used: %s", site.name, problem)
        return model


def comment_context(session: Session, comment: Comment, now: datetime, lines: tuple[Thresholds, bool]) -> Context:
    """``lines``: those its scores are drawn against, and whether its decision recorded them (``decision_lines``)."""
    context = Context(lines=lines[0], lines_recorded=lines[1])
    author = []
    if comment.author_email:
        author.append(Comment.author_email == comment.author_email)
    if comment.author_network:
        # An IP (or an IPv6 /64) is shared (offices, mobile carriers), so only near this comment, as the policy
        # counts it. The counts differ from the policy's (which the decision keeps in Decision.signals): they are
        # counted now, either side of the comment, for the moderator's context.
        near = Comment.received_at.between(
            comment.received_at - AUTHOR_IP_WINDOW, comment.received_at + AUTHOR_IP_WINDOW
        )
        author.append((Comment.author_network == comment.author_network) & near)
    if author:
        same_author = (Comment.site_id == comment.site_id) & or_(*author) & (Comment.id != comment.id)
        counts = dict(
            session.execute(
                select(Comment.status, func.count(Comment.id)).where(same_author).group_by(Comment.status)
            ).all()
        )
        context.history = AuthorHistory(
            approved=counts.get(CommentStatus.APPROVED, 0),
            rejected=counts.get(CommentStatus.REJECTED, 0),
            held=counts.get(CommentStatus.HELD, 0),
            last_day=session.scalar(
                select(func.count(Comment.id)).where(same_author, Comment.received_at >= now - timedelta(days=1))
            )
            or 0,
        )
    context.same_text = list(
        session.scalars(
            select(Comment)
            .where(Comment.body_fingerprint == comment.body_fingerprint, Comment.id != comment.id)
            .order_by(Comment.received_at.desc(), Comment.id.desc())
            .limit(10)
        )
    )
    return context


def parents_of(session: Session, comments: Sequence[Comment]) -> dict[int, Comment]:
    """The stored comment each reply answers, by the reply's id: one query for a whole page of cards.

    A reply names its parent by the site's id (``parent_id``), unique only within its own site, so a comment
    of another site with that id is not its parent. A reply whose parent never arrived is not in the result.
    """
    wanted: dict[int, set[str]] = {}
    for comment in comments:
        if comment.parent_id is not None:
            wanted.setdefault(comment.site_id, set()).add(comment.parent_id)
    if not wanted:
        return {}
    # Per site, so each part uses the (site_id, external_id) unique index.
    per_site = ((Comment.site_id == site_id) & Comment.external_id.in_(sorted(ids)) for site_id, ids in wanted.items())
    found = {
        (parent.site_id, parent.external_id): parent
        for parent in session.scalars(select(Comment).where(or_(*per_site)))
    }
    return {
        comment.id: found[(comment.site_id, comment.parent_id)]
        for comment in comments
        if comment.parent_id is not None and (comment.site_id, comment.parent_id) in found
    }


def audit_trail(session: Session, comment_id: int) -> list[ModerationAction]:
    return list(
        session.scalars(
            select(ModerationAction).where(ModerationAction.comment_id == comment_id).order_by(ModerationAction.id)
        )
    )
