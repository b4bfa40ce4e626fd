"""Deciding a comment: scores, signals beyond the text, policy, and the stored decision.

Idempotent: a comment that already has a current decision is left alone, and the partial unique
index on ``decisions(comment_id) WHERE is_current`` turns a race between two workers into an
IntegrityError for the loser instead of two decisions.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Select,
    bindparam,
    case,
    delete,
    exists,
    func,
    select,
    true,
    tuple_,
    union,
    update,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from models.entities import (
    CallbackDelivery,
    Comment,
    CommentStatus,
    Decision,
    OutboxMessage,
    Outcome,
)
from moderation import outbox
from moderation.callbacks import COMMENT_DECIDED, new_callback
from moderation.classifier import ModerationModel, Scores
from moderation.features import CommentText
from moderation.intake import CLASSIFY
from moderation.lists import entries_for_site, match_lists
from moderation.policy import PolicyLimits, Signals, Thresholds, Verdict, decide
from moderation.reasons import Reason

log = logging.getLogger(__name__)

DUPLICATE_WINDOW = timedelta(days=1)
DUPLICATE_MIN_CHARS = 40  # "thanks!" twice is not a campaign
# An address is shared (mobile carriers, offices, a site that sends its proxy's address) and changes hands:
# what others did from it counts only for a day, while an e-mail address's history counts for good.
AUTHOR_IP_WINDOW = timedelta(days=1)
# Counted runs of relayed classify work before a comment is held unscored: at most one per publish by the
# relay, which publishes work again once it has waited its quiet time (30 s by default) since the last, so a
# person sees such a comment within a few minutes.
TRIES_BEFORE_HOLDING = 3


@dataclass(frozen=True, slots=True)
class Decided:
    comment_id: int
    decision_id: int
    outcome: str
    delivery_id: int | None
    reasons: list[str]
    waiting_since: datetime  # when this text's classify work was written (intake of the comment or its edit)
    revision: int  # of the text decided


def comment_text(comment: Comment) -> CommentText:
    return CommentText(
        body=comment.body,
        author=comment.author_name or "",
        email=comment.author_email or "",
        url=comment.author_url or "",
        article=comment.article_id,
    )


def site_thresholds(model: ModerationModel, comment: Comment) -> Thresholds:
    return Thresholds.of_card(model.card).of_site(comment.site)


def gather_signals(session: Session, comment: Comment, now: datetime) -> Signals:
    return gather_signals_many(session, [comment], now)[comment.id]


def gather_signals_many(session: Session, comments: list[Comment], now: datetime) -> dict[int, Signals]:
    """What is known beyond each comment's words, by comment id: three queries, however many comments."""
    duplicates = _duplicates_elsewhere(session, [c.id for c in comments if len(c.body) >= DUPLICATE_MIN_CHARS], now)
    history = _author_history(session, [c.id for c in comments], now)
    entries = {site_id: entries_for_site(session, site_id) for site_id in {c.site_id for c in comments}}
    signals = {}
    for comment in comments:
        listed = match_lists(entries[comment.site_id], comment)
        by_status = history.get(comment.id, {})
        signals[comment.id] = replace(
            Signals.of_text(comment.body),
            blocked_terms=listed.blocked_terms,
            author_allowed=listed.author_allowed,
            duplicates_elsewhere=duplicates.get(comment.id, 0),
            author_posts_last_hour=sum(in_last_hour for _, in_last_hour in by_status.values()),
            author_approved_before=by_status.get(CommentStatus.APPROVED, (0, 0))[0],
            author_rejected_before=by_status.get(CommentStatus.REJECTED, (0, 0))[0],
        )
    return signals


def _duplicates_elsewhere(session: Session, comment_ids: list[int], now: datetime) -> dict[int, int]:
    """Per comment, the other comments of its site with the same text in the last DUPLICATE_WINDOW."""
    if not comment_ids:
        return {}
    rows = session.execute(_duplicates_statement(), {"ids": comment_ids, "since": now - DUPLICATE_WINDOW})
    return {comment_id: total for comment_id, total in rows}


@functools.cache
def _duplicates_statement() -> Select[int, int]:
    """Built once (building a self-join of aliases costs more than running it); values are bound."""
    target, other = aliased(Comment), aliased(Comment)
    same_text = (
        (_not_indexed(other.site_id) == target.site_id)
        & (other.body_fingerprint == target.body_fingerprint)
        & (other.id != target.id)
        & (other.received_at >= bindparam("since"))
    )
    return (
        select(target.id, func.count(other.id))
        .join(other, same_text)
        .where(target.id.in_(bindparam("ids", expanding=True)))
        .group_by(target.id)
    )


def _author_history(session: Session, comment_ids: list[int], now: datetime) -> dict[int, dict[str, tuple[int, int]]]:
    """Per comment, its author's other comments on the site: status -> (all, last hour).

    The author's are those with the same e-mail, and those from the same IP (for IPv6, the same /64:
    ``models.entities.author_network``) within ``AUTHOR_IP_WINDOW``.
    """
    window = {"since": now - timedelta(hours=1), "ip_since": now - AUTHOR_IP_WINDOW}
    rows = session.execute(_author_history_statement(), {"ids": comment_ids, **window})
    history: dict[int, dict[str, tuple[int, int]]] = {}
    for comment_id, status, total, in_last_hour in rows:
        history.setdefault(comment_id, {})[status] = (total, in_last_hour)
    return history


@functools.cache
def _author_history_statement() -> Select[int, str, int, int]:
    """One lookup by e-mail and one by IP, each through its own index, united so that a comment matching
    both counts once. Built once, like ``_duplicates_statement``."""
    target, other = aliased(Comment), aliased(Comment)
    same_site = (_not_indexed(other.site_id) == target.site_id) & (other.id != target.id)
    matches = [
        select(target.id.label("comment_id"), other.id.label("other_id"), other.status, other.received_at)
        .join(other, same_site & (func.coalesce(target_key, "") != "") & (other_key == target_key) & recent)
        .where(target.id.in_(bindparam("ids", expanding=True)))
        for target_key, other_key, recent in (
            (target.author_email, other.author_email, true()),
            (target.author_network, other.author_network, other.received_at >= bindparam("ip_since")),
        )
    ]
    pairs = union(*matches).subquery()
    last_hour = func.count().filter(pairs.c.received_at >= bindparam("since"))
    return select(pairs.c.comment_id, pairs.c.status, func.count(), last_hour).group_by(
        pairs.c.comment_id, pairs.c.status
    )


def _not_indexed(site_id: InstrumentedAttribute[int]) -> ColumnElement[int]:
    """The site, compared so that no index on it applies: the lookup goes by text, e-mail or IP.

    Without statistics (a new site's first minute of comments, before autovacuum analyzes the table)
    PostgreSQL takes an index that starts with the site and reads every comment of the site for each
    comment decided, 60 ms a lookup at 4,000 comments; the same value plus zero cannot use that index.
    """
    return site_id + 0


def recorded_signals(signals: Signals) -> dict[str, Any]:
    """``signals`` as stored with a decision (``Decision.signals``): every field by its name, as a number.

    Counts, flags and the script are kept as they are; text, or a collection of it, only as how many: a
    blocked term can be an author's e-mail address, and personal data is kept only where erasure finds it
    (moderation.privacy). A field of another kind is refused rather than stored as it is.
    """
    return {f.name: _recorded(f.name, getattr(signals, f.name)) for f in fields(signals)}


def _recorded(name: str, value: object) -> int | bool | str:
    if isinstance(value, StrEnum | bool | int):
        return value
    if isinstance(value, str | tuple | list | frozenset | set):
        return len(value)
    raise TypeError(f"signal {name}: a {type(value).__name__} cannot be kept with a decision; say how to count it")


def current_decision(session: Session, comment_id: int) -> Decision | None:
    return session.scalar(select(Decision).where(Decision.comment_id == comment_id, Decision.is_current))


def decide_comment(
    session: Session, comment_id: int, model: ModerationModel, now: datetime, limits: PolicyLimits = PolicyLimits()
) -> Decided | None:
    """Classify and decide one pending comment; None if it is gone, deleted, already decided or being decided."""
    decided = decide_waiting(session, comment_id, model, now, limits, batch_size=1)
    return decided[0] if decided else None


def decide_waiting(
    session: Session,
    comment_id: int,
    model: ModerationModel,
    now: datetime,
    limits: PolicyLimits = PolicyLimits(),
    batch_size: int = 1,
) -> list[Decided]:
    """Decide ``comment_id`` and other comments waiting to be classified, up to ``batch_size``, in one go.

    Every comment taken is locked for this transaction; comments another worker holds are skipped, not
    waited for (their own transaction decides them, or they stay in the outbox for the relay). Reads,
    scoring and writes go per batch: a statement or two for the comments (with their sites), one for their
    latest decisions, three for the signals, one claim, one insert of decisions, one delete of their outbox
    rows, one insert of callbacks.
    """
    todo, latest = _take_undecided(session, comment_id, batch_size)
    if not todo:
        return []
    try:
        judged = _judged(session, todo, latest, model, now, limits)
    except OperationalError:
        raise
    except Exception as error:
        if batch_size > 1:  # even a batch of one: its task then counts the failure (see BatchFailedError)
            raise BatchFailedError([c.id for c in todo]) from error
        raise
    claimed = _claim_for_decision(session, {j.comment.id: (j.comment.revision, j.status) for j in judged})
    for dropped in (j for j in judged if j.comment.id not in claimed):
        # Edited or deleted while this text was being classified: the edit's own task decides the new text.
        log.info("comment changed while being classified; decision dropped", extra={"comment_id": dropped.comment.id})
    return _store_decisions(session, [j for j in judged if j.comment.id in claimed], latest, model, now)


@dataclass(frozen=True, slots=True)
class _Judged:
    comment: Comment
    verdict: Verdict
    scores: Scores
    explanation: dict[str, Any]
    signals: Signals
    lines: Thresholds  # the model's, with the site's own values over them

    @property
    def status(self) -> CommentStatus:
        return Outcome(self.verdict.outcome).comment_status


def _take_undecided(session: Session, comment_id: int, batch_size: int) -> tuple[list[Comment], dict[int, Decision]]:
    """The comment and the others waiting, locked, that still need a decision; with their latest decisions."""
    pending = (Comment.id == comment_id) & (Comment.status == CommentStatus.PENDING)
    own = _take_comments(session, select(Comment).where(pending))
    if not own:
        if _settled_revision(session, comment_id) is not None:
            # Decided (most often by an earlier task's batch), reviewed or deleted: this message costs two
            # reads, never a batch's worth of work, and no row lock (a lock would make the commit write).
            _drop_settled_work(session, comment_id)
            return [], {}
        # Another worker is deciding it (or it is gone): this task drains the others waiting.
        log.info("comment %s is gone or another worker is deciding it", comment_id)
    waiting = own + (_take_waiting(session, own, comment_id, batch_size - len(own)) if batch_size > 1 else [])
    if not waiting:
        return [], {}
    latest = _latest_decisions(session, [c.id for c in waiting])
    todo = []
    for comment in waiting:
        previous = latest.get(comment.id)
        if previous is not None and previous.is_current:
            _drop_classify_work_unless_edited(session, comment.id, comment.revision)
        else:
            todo.append(comment)
    return todo, latest


def _judged(
    session: Session,
    comments: list[Comment],
    latest: dict[int, Decision],
    model: ModerationModel,
    now: datetime,
    limits: PolicyLimits,
) -> list[_Judged]:
    scored = model.score_and_explain_many([comment_text(c) for c in comments])
    signals = gather_signals_many(session, comments, now)
    judged = []
    for comment, (scores, explanation) in zip(comments, scored, strict=True):
        lines = site_thresholds(model, comment)
        verdict = _after_edit(decide(scores, lines, signals[comment.id], limits), latest.get(comment.id))
        judged.append(_Judged(comment, verdict, scores, explanation, signals[comment.id], lines))
    return judged


def _store_decisions(
    session: Session, judged: list[_Judged], latest: dict[int, Decision], model: ModerationModel, now: datetime
) -> list[Decided]:
    """The claimed comments' decisions, their outbox rows gone and their callbacks queued."""
    if not judged:
        return []
    decisions = [
        Decision(
            comment_id=j.comment.id,
            outcome=j.verdict.outcome,
            is_current=True,
            spam_score=j.scores.spam,
            advice_score=j.scores.medical_advice,
            reasons=j.verdict.reasons,
            explanation=j.explanation,
            signals=recorded_signals(j.signals),
            thresholds=asdict(j.lines),
            model_version=model.version,
            decided_by="model",
            created_at=now,
        )
        for j in judged
    ]
    return _record_decisions(session, [j.comment for j in judged], decisions, latest, now)


def _record_decisions(
    session: Session, comments: list[Comment], decisions: list[Decision], latest: dict[int, Decision], now: datetime
) -> list[Decided]:
    """Store new decisions of claimed comments (in the same order): their work done, their callbacks queued."""
    session.add_all(decisions)
    session.flush()
    waiting_since = outbox.complete(session, CLASSIFY, [d.comment_id for d in decisions])
    deliveries = _schedule_callbacks(
        session, [(c, d, latest.get(c.id)) for c, d in zip(comments, decisions, strict=True)], now
    )
    return [
        Decided(
            c.id,
            d.id,
            d.outcome,
            _pending_id(deliveries.get(d.id)),
            list(d.reasons),
            waiting_since.get(c.id, c.received_at),
            c.revision,
        )
        for c, d in zip(comments, decisions, strict=True)
    ]


class BatchFailedError(Exception):
    """Scoring or the policy failed for a batch: one of its comments, maybe not the task's own. Nothing was
    written; the caller decides each of them alone, so that the one failing is found and the others are not
    left waiting (their own messages may have come and gone while this batch held them)."""

    def __init__(self, comment_ids: list[int]) -> None:
        super().__init__(f"a batch of {len(comment_ids)} comments failed")
        self.comment_ids = comment_ids


def note_failed_run(session: Session, comment_id: int) -> None:
    """Count a run of the comment's classification that failed alone, outside the relay's counted runs (a
    batch's fallback), once per publish as those are. Its work is then left out of batches (``_take_waiting``),
    so it cannot take down the batches of other comments again, and the relay's runs count on from it."""
    work = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.kind == CLASSIFY, OutboxMessage.comment_id == comment_id)
        .order_by(OutboxMessage.id)
        .with_for_update(skip_locked=True)
    ).first()
    if work is not None and (work.tries == 0 or work.attempts > work.counted_attempt):
        work.tries += 1
        work.counted_attempt = work.attempts


class CountedRuns(NamedTuple):
    tries: int  # runs counted so far
    added: bool  # whether this call counted one (only then may a run that the database failed take it back)


def note_relayed_try(
    session: Session, comment_id: int, count: bool = True, per_publish: bool = True
) -> CountedRuns | None:
    """Count a run of classify work the relay published again, and return the runs counted so far; None when
    the comment is not waiting for a decision, or another worker holds it (a run in progress: nothing failed).

    The relay publishes work again only once it has waited some time since its last publish: the run before
    failed, its worker was killed mid-run (a regex or a model stuck in C code leaves no error to catch), or
    the broker lost the message. So at most one run is counted per publish: copies of one publish (relayed
    while the queue was long, redelivered) count once, and no clock is compared, so hosts whose clocks
    differ count alike. Committed by the caller before the run, so a killed run counts too. ``count`` False
    (a retry of the same message after a database error) only reads the count; ``per_publish`` False counts
    the run whatever the relay did (a message the broker delivered again because its worker was lost).
    """
    free = session.scalar(
        select(Comment.id)
        .where(Comment.id == comment_id, Comment.status == CommentStatus.PENDING)
        .with_for_update(skip_locked=True, key_share=True)
    )
    work = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.kind == CLASSIFY, OutboxMessage.comment_id == comment_id)
        .order_by(OutboxMessage.id)
    ).first()
    if free is None or work is None:
        return None
    added = count and (work.attempts > work.counted_attempt or not per_publish)
    if added:
        work.tries += 1
        work.counted_attempt = work.attempts
    return CountedRuns(work.tries, added)


def forget_relayed_try(session: Session, comment_id: int) -> None:
    """Take back the count of a run that the database failed (a lock or statement timeout): nothing in the
    comment failed. The next publish counts again; a retry of the same message does not. A row another
    transaction holds (what made the run time out, maybe) is left as it is rather than waited for."""
    free = (
        select(OutboxMessage.id)
        .where(OutboxMessage.kind == CLASSIFY, OutboxMessage.comment_id == comment_id, OutboxMessage.tries > 0)
        .with_for_update(skip_locked=True)
    )
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(free.scalar_subquery()))
        .values(tries=OutboxMessage.tries - 1)
        .execution_options(synchronize_session=False)
    )


def _counted_tries(session: Session, comment_id: int) -> int:
    counted = select(func.max(OutboxMessage.tries)).where(
        OutboxMessage.kind == CLASSIFY, OutboxMessage.comment_id == comment_id
    )
    return int(session.scalar(counted) or 0)


def hold_unclassified(session: Session, comment_id: int, model_version: str, now: datetime) -> Decided | None:
    """Hold a comment whose classification failed run after run, unscored, for a person to read.

    Reason ``not_classified``; the site is told as for any hold. None when the comment no longer waits for
    a decision (decided by a run that did succeed, or deleted), another worker is deciding it, or its runs
    counted are no longer past ``TRIES_BEFORE_HOLDING``: an edit committed since they were counted starts
    the count again, and the new text gets its own runs.
    """
    todo, latest = _take_undecided(session, comment_id, batch_size=1)
    if not todo or _counted_tries(session, comment_id) <= TRIES_BEFORE_HOLDING:  # read under the comment's lock
        return None
    comment = todo[0]
    verdict = _after_edit(Verdict(Outcome.HOLD, [Reason.NOT_CLASSIFIED]), latest.get(comment.id))
    if not _claim_for_decision(session, {comment.id: (comment.revision, Outcome.HOLD.comment_status)}):
        return None
    decision = Decision(
        comment_id=comment.id,
        outcome=verdict.outcome,
        is_current=True,
        reasons=verdict.reasons,
        model_version=model_version,
        decided_by="model",
        created_at=now,
    )
    return _record_decisions(session, [comment], [decision], latest, now)[0]


def _take_comments(session: Session, query: Select[Comment]) -> list[Comment]:
    """The comments of ``query`` with their sites, locked; rows another transaction holds are skipped.

    ``FOR NO KEY UPDATE`` (``key_share``), the lock an UPDATE of the comment takes: it excludes other deciders,
    edits and verdicts (``FOR UPDATE``), but not a transaction that only inserts a row referring to the
    comment (a repeated delivery's receipt), which takes ``FOR KEY SHARE``. With ``FOR UPDATE`` such a
    transaction made the comment look taken, and its decision waited for the relay.
    """
    with_site = query.options(joinedload(Comment.site, innerjoin=True))
    return list(session.scalars(with_site.with_for_update(of=Comment, skip_locked=True, key_share=True)))


# Pages of candidates a batch looks through for other authors when one author's comments fill the first (a
# flood from one address, or a site whose proxy sends one IP for everyone).
CANDIDATE_PAGES = 10


def _take_waiting(session: Session, own: list[Comment], comment_id: int, limit: int) -> list[Comment]:
    """Other pending comments whose classification is waiting, oldest work first, one per author.

    One per author: a comment's signals count its author's earlier rejections, which a batch-mate's
    decision in the same transaction would not be yet. Work the relay has published again is left to its
    own task, so a comment that fails every time cannot take whole batches down with it; so is work with a
    run counted (a message delivered again after its worker was lost, or a run that failed alone).
    Candidates come in pages from the outbox's primary key order (an index scan however large the backlog),
    each with room for rows other workers hold; a next page is read only while one author's comments leave
    the batch short. The chosen comments are then locked by primary key, a batch's room at a time, so that
    those another worker holds (two workers starting together see the same oldest candidates) are made up
    for by the next candidates rather than shrinking the batch.
    """
    authors = {key for c in own for key in _author_keys(c.site_id, c.author_email, c.author_network)}
    chosen: list[int] = []
    after = 0
    for _ in range(CANDIDATE_PAGES):
        page = session.execute(
            select(OutboxMessage.id, Comment.id, Comment.site_id, Comment.author_email, Comment.author_network)
            .join(Comment, Comment.id == OutboxMessage.comment_id)
            .where(
                OutboxMessage.kind == CLASSIFY,
                OutboxMessage.attempts == 0,
                OutboxMessage.tries == 0,
                OutboxMessage.comment_id != comment_id,
                OutboxMessage.id > after,
                Comment.status == CommentStatus.PENDING,
            )
            .order_by(OutboxMessage.id)
            .limit(limit * 4)
        ).all()
        for _work_id, candidate_id, site_id, email, network in page:
            keys = _author_keys(site_id, email, network)
            if not keys & authors:
                authors |= keys
                chosen.append(candidate_id)
        if len(chosen) >= limit or len(page) < limit * 4:
            break
        after = page[-1][0]
    taken: list[Comment] = []
    while chosen and len(taken) < limit:
        room = limit - len(taken)
        tried, chosen = chosen[:room], chosen[room:]
        # Pending again under the lock: a candidate another worker decided since it was read is made up for too.
        pending = select(Comment).where(Comment.id.in_(tried), Comment.status == CommentStatus.PENDING)
        taken += _take_comments(session, pending.order_by(Comment.id))
    return sorted(taken, key=lambda comment: comment.id)


def _author_keys(site_id: int, email: str | None, network: str | None) -> set[tuple[int, str, str]]:
    return {(site_id, kind, value) for kind, value in (("email", email), ("network", network)) if value}


def _latest_decisions(session: Session, comment_ids: list[int]) -> dict[int, Decision]:
    """Each comment's newest decision: a new current decision always gets the highest id."""
    newest = select(func.max(Decision.id)).where(Decision.comment_id.in_(comment_ids)).group_by(Decision.comment_id)
    return {d.comment_id: d for d in session.scalars(select(Decision).where(Decision.id.in_(newest)))}


def _schedule_callbacks(
    session: Session, decided: list[tuple[Comment, Decision, Decision | None]], now: datetime
) -> dict[int, CallbackDelivery]:
    """The callbacks of new decisions (keyed by decision id), written in one statement."""
    deliveries = {}
    for comment, decision, _previous in decided:
        # Every decision is told, an edit's too when the outcome stayed: intake answered "pending" for it.
        delivery = new_callback(comment.site, comment, decision, COMMENT_DECIDED, now)
        if delivery is not None:
            deliveries[decision.id] = delivery
    session.add_all(deliveries.values())
    session.flush()
    return deliveries


def _settled_revision(session: Session, comment_id: int) -> int | None:
    """The revision of a comment that needs no decision (decided, reviewed or deleted); None otherwise."""
    found = session.execute(select(Comment.status, Comment.revision).where(Comment.id == comment_id)).first()
    return found.revision if found is not None and found.status != CommentStatus.PENDING else None


def _drop_settled_work(session: Session, comment_id: int) -> None:
    """Remove a settled comment's classify work, if any is left (most often its batch removed it already).

    Only then is the comment locked: an edit in flight holds that lock and reuses the outbox row (writing to
    it only to reset a count of tries), so the check must wait for the edit to commit and see the comment
    pending again.
    """
    left = select(OutboxMessage.id).where(OutboxMessage.kind == CLASSIFY, OutboxMessage.comment_id == comment_id)
    if session.scalar(left.limit(1)) is None:
        return
    locked = session.execute(
        select(Comment.status, Comment.revision).where(Comment.id == comment_id).with_for_update(key_share=True)
    ).first()
    if locked is not None and locked.status != CommentStatus.PENDING:
        _drop_classify_work_unless_edited(session, comment_id, locked.revision)


def _drop_classify_work_unless_edited(session: Session, comment_id: int, revision: int) -> None:
    """A duplicate task found nothing to do: its outbox row goes, unless the comment was edited since.

    Callers hold the comment's row lock; the revision check is defence in depth: an edit makes the comment
    pending at a new revision, and its outbox row is that edit's only promise of a classification.
    """
    unchanged = exists().where(
        Comment.id == comment_id,
        Comment.revision == revision,
        Comment.status != CommentStatus.PENDING,
    )
    session.execute(
        delete(OutboxMessage)
        .where(OutboxMessage.kind == CLASSIFY, OutboxMessage.comment_id == comment_id, unchanged)
        .execution_options(synchronize_session=False)
    )


def _claim_for_decision(session: Session, wanted: dict[int, tuple[int, CommentStatus]]) -> set[int]:
    """Set each comment's new status only if it is still the pending text that was classified.

    ``wanted`` maps comment id to (revision classified, new status). One compare-and-swap statement for
    the batch; the ids it changed come back.
    """
    if not wanted:
        return set()
    status = case({comment_id: new for comment_id, (_, new) in wanted.items()}, value=Comment.id)
    versions = [(comment_id, revision) for comment_id, (revision, _) in wanted.items()]
    claimed = session.scalars(
        update(Comment)
        .where(tuple_(Comment.id, Comment.revision).in_(versions), Comment.status == CommentStatus.PENDING)
        .values(status=status)
        .returning(Comment.id)
        .execution_options(synchronize_session=False)
    ).all()
    for comment_id in claimed:
        comment = session.get(Comment, comment_id)  # in the session already: no round trip
        if comment is not None:
            set_committed_value(comment, "status", wanted[comment_id][1])
    return set(claimed)


def _after_edit(verdict: Verdict, previous: Decision | None) -> Verdict:
    """A moderator's verdict on the old text does not carry over to the new text: a human looks again.

    The model still decides the new text; only an approval turns into a hold (``edited_after_review``).
    A comment already held for that reason and edited again before review stays held for it.
    """
    reviewed = previous is not None and (not previous.by_model or Reason.EDITED_AFTER_REVIEW in previous.reasons)
    if not reviewed:
        return verdict
    if verdict.outcome == Outcome.APPROVE:
        return Verdict(Outcome.HOLD, [Reason.EDITED_AFTER_REVIEW])
    return Verdict(verdict.outcome, [*verdict.reasons, Reason.EDITED_AFTER_REVIEW])


def _pending_id(delivery: CallbackDelivery | None) -> int | None:
    return delivery.id if delivery is not None and delivery.status == "pending" else None
