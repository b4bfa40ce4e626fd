"""The review queue, a comment's page, and the actions: approve, reject with a reason, undo, in bulk."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import login_required
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import MultiDict

from dashboard.auth import safe_next
from dashboard.blueprint import bp, form_row_id
from dashboard.context import db, me, runtime, wants_json
from dashboard.queries import (
    Filters,
    audit_trail,
    comment_context,
    decision_lines,
    is_listed,
    model_lines,
    parents_of,
    queue_counts,
    queue_page,
)
from models.entities import CallbackDelivery, Comment, Decision, Site
from moderation.metrics import record_moderator_decision
from moderation.reasons import ALL_REASONS, REJECT_REASONS
from moderation.review import (
    ConflictError,
    ReviewError,
    checked_action,
    pending_delivery_id,
    put_back_by_undo,
    record_verdict,
)

log = logging.getLogger(__name__)


@bp.get("/")
@login_required
def index() -> ResponseReturnValue:
    return redirect(url_for("dashboard.queue"))


@bp.get("/queue")
@login_required
def queue() -> ResponseReturnValue:
    session = db()
    filters = Filters.from_args(request.args)
    sites = list(session.scalars(select(Site.name).order_by(Site.name)))
    if filters.site and filters.site not in sites:
        unknown = f"there is no site \u201c{filters.site[:40]}\u201d, so no comment can match"
        filters = replace(filters, problems=(*filters.problems, unknown))
    page = queue_page(session, filters)
    now = datetime.now(UTC)
    lines = model_lines(session, [current for _, current in page.items])
    contexts = {
        comment.id: comment_context(session, comment, now, decision_lines(lines, current, comment.site))
        for comment, current in page.items
    }
    shown_decisions = [current.id for _, current in page.items if current is not None]
    return render_template(
        "queue.html",
        filters=filters,
        page=page,
        contexts=contexts,
        parents=parents_of(session, [comment for comment, _ in page.items]),
        put_back=put_back_by_undo(session, shown_decisions),
        counts=queue_counts(session, filters),
        sites=sites,
        reasons=ALL_REASONS,
        reject_reasons=REJECT_REASONS,
        now=now,
    )


@bp.get("/comments/<row_id:comment_id>")
@login_required
def comment(comment_id: int) -> ResponseReturnValue:
    session = db()
    found = session.get(Comment, comment_id)
    if found is None:
        abort(404)
    current = next((d for d in found.decisions if d.is_current), None)
    deliveries = session.scalars(
        select(CallbackDelivery).where(CallbackDelivery.comment_id == comment_id).order_by(CallbackDelivery.id)
    ).all()
    opened_from = queue_page_opened_from(request.args.get("queue"))
    return render_template(
        "comment.html",
        comment=found,
        current=current,
        put_back=put_back_by_undo(session, [decision.id for decision in found.decisions]),
        context=comment_context(
            session,
            found,
            datetime.now(UTC),
            decision_lines(model_lines(session, [current]), current, found.site),
        ),
        parent=parents_of(session, [found]).get(found.id),
        actions=audit_trail(session, comment_id),
        deliveries=deliveries,
        reject_reasons=REJECT_REASONS,
        opened_from=opened_from,
        queue_link=opened_from or url_for("dashboard.queue"),
    )


def queue_page_opened_from(target: str | None) -> str | None:
    """The queue page a comment was opened from (its ``queue`` argument), with its filters and page number, if
    that is a page of this dashboard's queue."""
    if target and _queue_page(target) is not None and safe_next(target) == target:
        return target
    return None


def _queue_page(page: str) -> SplitResult | None:
    """``page`` (a request.full_path the dashboard wrote, in a form or a link) split, if it is the queue's."""
    try:
        split = urlsplit(page)
    except ValueError:  # "//[": not a URL, so not the queue's
        return None
    return split if request.script_root + split.path == url_for("dashboard.queue") else None


@dataclass
class Outcome:
    comment_id: int
    ok: bool
    message: str
    status: str | None = None
    decision_id: int | None = None
    conflict: bool = False


def act(comment_id: int, action: str, reason: str | None, note: str | None, expected: int | None) -> Outcome:
    """One verdict in its own transaction, then the callback's notify task after commit."""
    session = db()
    try:
        decision = record_verdict(session, comment_id, me(), action, reason, note, expected, datetime.now(UTC))
        delivery_id = pending_delivery_id(session, decision)
        status = decision.comment.status
        outcome = str(decision.outcome)
        session.commit()
    except ConflictError as conflict:
        session.rollback()
        return Outcome(comment_id, False, str(conflict), conflict=True, decision_id=conflict.current_decision_id)
    except IntegrityError:
        # The partial unique index caught a concurrent verdict that slipped past the compare-and-swap.
        session.rollback()
        return Outcome(comment_id, False, f"comment {comment_id} was changed by someone else", conflict=True)
    except ReviewError as error:
        session.rollback()
        return Outcome(comment_id, False, str(error))
    record_moderator_decision(outcome)  # after the commit: a verdict refused or rolled back was never made
    if delivery_id is not None:
        try:
            runtime().publisher.notify(delivery_id)
        except Exception:  # the callback row is committed; beat's retry loop sends it if the broker is down
            log.warning("publishing notify failed; the retry loop will send it", exc_info=True)
    return Outcome(comment_id, True, f"comment {comment_id}: {action} recorded", status, decision.id)


def act_on_form(comment_id: int, action: str, reason: str | None, note: str | None, expected: str) -> Outcome:
    """``act`` with the decision the moderator saw as the form sent it ("": no check). A value that names no
    row is refused, not read as "no check": the verdict would then overwrite whatever came since."""
    expected_id = form_row_id(expected) if expected else None
    if expected and expected_id is None:
        return Outcome(comment_id, False, f"not a decision id: {expected[:40]!r}")
    return act(comment_id, action, reason, note, expected_id)


@bp.post("/comments/<row_id:comment_id>/act")
@login_required
def act_on_comment(comment_id: int) -> ResponseReturnValue:
    form = request.form
    outcome = act_on_form(
        comment_id,
        form.get("action", ""),
        form.get("reason") or None,
        (form.get("note") or "").strip()[:2000] or None,
        form.get("expected_decision_id", ""),
    )
    if wants_json():
        code = 200 if outcome.ok else 409 if outcome.conflict else 400
        return jsonify({**outcome.__dict__, **_page_after(form.get("back", ""), outcome)}), code
    flash(outcome.message, "info" if outcome.ok else "error")
    return redirect(_back(url_for("dashboard.comment", comment_id=comment_id)))


def _page_after(page: str, outcome: Outcome) -> dict[str, Any]:
    """For the queue page an action was sent from, when the page cannot work it out by adding one: its tabs'
    counts now, and whether it still lists the comment. Under filters, where the comment went may not match
    them (a moderator's decision has no model reasons); on "all" the page does not know the status it left.
    Nothing for other pages: a queue of one status without filters takes one off and adds one elsewhere."""
    filters = _filters_of(page)
    if filters is None or not outcome.ok or not (filters.narrowed or filters.queue == "all"):
        return {}
    session = db()
    return {"counts": queue_counts(session, filters), "listed": is_listed(session, filters, outcome.comment_id)}


def _filters_of(page: str) -> Filters | None:
    """The filters of ``page`` (an action's ``back``) if it is the queue, else None."""
    sent_from = _queue_page(page)
    if sent_from is None:
        return None
    return Filters.from_args(MultiDict(parse_qsl(sent_from.query, keep_blank_values=True)))


@bp.post("/bulk")
@login_required
def bulk() -> ResponseReturnValue:
    """Act on many comments; each keeps its own conflict check, so one stale item does not stop the rest."""
    action = request.form.get("action", "")
    reason = request.form.get("reason") or None
    note = (request.form.get("note") or "").strip()[:2000] or None
    chosen = request.form.getlist("ids")[:500]
    try:
        checked_action(action, reason, note)
    except ReviewError as error:  # said once, not once per comment; nothing is done
        if wants_json():
            return jsonify(done=[], failed=[], error=str(error)), 400
        flash(f"Nothing done: {error}.", "error")
        return redirect(_back(url_for("dashboard.queue")))
    outcomes = []
    for item in chosen:
        given, _, expected = item.partition(":")
        comment_id = form_row_id(given)
        if comment_id is None:  # each item is checked before it is acted on: one bad id stops no other
            outcomes.append(Outcome(0, False, f"not a comment id: {given[:40]!r}"))
        else:
            outcomes.append(act_on_form(comment_id, action, reason, note, expected))
    done = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    if wants_json():
        return jsonify(done=[o.__dict__ for o in done], failed=[o.__dict__ for o in failed])
    if done:
        flash(f"{action}: {len(done)} comment(s) done.", "info")
    for outcome in failed:
        flash(outcome.message, "error")
    if not outcomes:
        flash("Select comments first (x, or the check boxes).", "error")
    return redirect(_back(url_for("dashboard.queue")))


def _back(default: str) -> str:
    """The page an action was sent from (its ``back``), checked as a sign-in's next page is (a path of this
    site that answers GET, no CR/LF to break the Location header), and under the dashboard; else ``default``."""
    target = request.form.get("back", "")
    return target if target.startswith("/dashboard") and safe_next(target) == target else default


def current_of(comment: Comment) -> Decision | None:
    return next((d for d in comment.decisions if d.is_current), None)
