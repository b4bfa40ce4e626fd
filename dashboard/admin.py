"""Admin pages: sites and secrets, thresholds with a what-if, lists, moderators, failing callbacks and dead letters,
models."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select

from dashboard.auth import admin_required
from dashboard.blueprint import bp, form_row_id
from dashboard.context import db, me, runtime, settings
from dashboard.queries import site_lines
from models.entities import CallbackDelivery, DeliveryStatus, ListEntry, ModelVersion, Moderator, Role, Site
from moderation import callbacks, evaluation, registry
from moderation.accounts import MAX_EMAIL_CHARS, AccountError, create_moderator
from moderation.lists import FIELDS, KINDS, MAX_LIST_VALUE_CHARS, ListError, add_entry, can_allow
from moderation.policy import ALLOW_LISTED_SKIPS, Thresholds
from moderation.reasons import REASON_LABELS
from moderation.sites import MAX_CALLBACK_URL_CHARS, MAX_SITE_NAME_CHARS, SiteError, create_site, rotate_secret

# A form refused (thresholds, a site or its callback URL, a list entry, a moderator account) answers its page again
# with the error and what was sent, with this status, not 200: a script or a test can tell a refusal from a success,
# and a browser shows the page all the same. A form taken redirects (its message flashed), so that a reload does not
# send it again.
REFUSED_STATUS = 422

# --- sites ---------------------------------------------------------------------------------------


@bp.get("/admin/sites")
@admin_required
def sites() -> ResponseReturnValue:
    return _sites_page()


def _sites_page(
    refused: str | None = None, entered: dict[str, str] | None = None, callback_entered: dict[int, str] | None = None
) -> ResponseReturnValue:
    """The page; after a ``refused`` form, with the error, the "Add a site" fields as ``entered`` and a site's
    callback URL input as typed (``callback_entered``, by site id), answered with REFUSED_STATUS."""
    session = db()
    page = render_template(
        "admin/sites.html",
        sites=session.scalars(select(Site).order_by(Site.name)).all(),
        failing=callbacks.failing_callback_counts(session),
        newest_secret_id=newest_secret_id,
        errors=[refused] if refused is not None else [],
        entered=entered or {"name": "", "callback_url": ""},
        callback_entered=callback_entered or {},
    )
    return (page, REFUSED_STATUS) if refused is not None else page


@bp.post("/admin/sites")
@admin_required
def sites_add() -> ResponseReturnValue:
    session = db()
    name, callback_url = request.form.get("name", ""), request.form.get("callback_url", "")
    try:
        site, secret = create_site(session, name.strip(), callback_url)
        session.commit()
    except SiteError as error:  # also a name another admin added since the check (create_site says so)
        session.rollback()
        # What was typed, to correct it (cut at the columns' lengths: it is echoed into the page).
        entered = {"name": name[:MAX_SITE_NAME_CHARS], "callback_url": callback_url[:MAX_CALLBACK_URL_CHARS]}
        return _sites_page(f"Not added: {error}.", entered)
    # Shown in this response only: it is never stored anywhere the dashboard can show it again.
    return secret_page(site, secret, created=True)


@bp.post("/admin/sites/<row_id:site_id>/callback")
@admin_required
def site_callback(site_id: int) -> ResponseReturnValue:
    session = db()
    # Locked: whether it is paused is read after any pause committed meanwhile.
    site = session.get(Site, site_id, with_for_update=True) or abort(404)
    url = request.form.get("callback_url", "")
    try:
        saved = callbacks.save_callback_url(session, site, url, datetime.now(UTC))
    except SiteError as error:
        name = site.name
        session.rollback()  # nothing changed; the lock on the row is let go before the page is read
        # The URL as typed in that site's input only, to correct it; the others show their saved URLs.
        typed = {site_id: url[:MAX_CALLBACK_URL_CHARS]}
        return _sites_page(f"Callback URL of {name} not saved: {error}.", callback_entered=typed)
    session.commit()
    # Committed as pending: beat's retry loop sends what was held back to the URL just saved.
    flash(callback_url_message(site.name, saved), "info")
    return redirect(url_for("dashboard.sites"))


def callback_url_message(name: str, saved: callbacks.CallbackUrlSaved) -> str:
    if saved.url is None:
        held = f" {saved.held_back} waiting callback(s) held back until a URL is saved." if saved.held_back else ""
        return f"Callback URL of {name} cleared.{held}"
    if saved.stays_paused:
        return f"Callback URL of {name} saved; its callbacks stay paused until resumed."
    held_back = f" {saved.released} held-back callback(s) queued again." if saved.released else ""
    return f"Callback URL of {name} saved.{held_back}"


@bp.post("/admin/sites/<row_id:site_id>/pause")
@admin_required
def site_pause(site_id: int) -> ResponseReturnValue:
    session = db()
    site = session.get(Site, site_id, with_for_update=True) or abort(404)
    earlier_pauser = site.callbacks_paused_by  # a second click, or another admin's pause seen late
    held = callbacks.pause_callbacks(session, site, datetime.now(UTC), by=me().email)
    session.commit()
    if earlier_pauser:
        flash(f"Callbacks of {site.name} were already paused by {earlier_pauser}; {held} more held back.", "info")
    else:
        flash(f"Callbacks of {site.name} paused; {held} waiting callback(s) held back until resumed.", "info")
    return redirect(url_for("dashboard.sites"))


@bp.post("/admin/sites/<row_id:site_id>/resume")
@admin_required
def site_resume(site_id: int) -> ResponseReturnValue:
    session = db()
    site = session.get(Site, site_id, with_for_update=True) or abort(404)
    if not site.callback_url:
        flash(f"{site.name} has no callback URL to send to: save one first.", "error")
        return redirect(url_for("dashboard.sites"))
    released = callbacks.enable_callbacks(session, site, datetime.now(UTC))
    session.commit()
    # Committed as pending: beat's retry loop sends them.
    flash(f"Callbacks of {site.name} resumed; {released} held-back callback(s) queued again.", "info")
    return redirect(url_for("dashboard.sites"))


@bp.post("/admin/sites/<row_id:site_id>/rotate")
@admin_required
def site_rotate(site_id: int) -> ResponseReturnValue:
    session = db()
    site = session.get(Site, site_id, with_for_update=True) or abort(404)
    # The form names the newest secret the admin saw: a reload of the new-secret page (the browser sends the
    # form again) or a second admin's rotation must not issue another secret, cutting short the one copied.
    if request.form.get("newest_secret") != str(newest_secret_id(site)):
        flash(
            f"The secret of {site.name} was rotated since that page was loaded; nothing changed. The new secret "
            "was shown once: if it was not copied, rotate again.",
            "error",
        )
        return redirect(url_for("dashboard.sites"))
    secret = rotate_secret(session, site, settings().secret_overlap)
    session.commit()
    return secret_page(site, secret, created=False)


def newest_secret_id(site: Site) -> int:
    return max((secret.id for secret in site.secrets), default=0)


def secret_page(site: Site, secret: str, created: bool) -> ResponseReturnValue:
    """The page that shows a new secret, the only time it is shown: never kept by a cache or the history."""
    page = render_template(
        "admin/secret.html", site=site, secret=secret, created=created, overlap=settings().secret_rotation_overlap_hours
    )
    return page, {"Cache-Control": "no-store"}


# --- thresholds ----------------------------------------------------------------------------------

THRESHOLD_NAMES = ("spam_reject", "spam_hold", "advice_hold")
# The names the page shows: an admin reads "“Hold as possible spam” must not be above “Reject as spam”".
THRESHOLD_LABELS = {
    "spam_reject": "Reject as spam",
    "spam_hold": "Hold as possible spam",
    "advice_hold": "Hold as medical advice",
}


def threshold_problem(problem: ValueError) -> str:
    """Why proposed thresholds cannot be used, in the page's words rather than the code's."""
    message = str(problem)
    for name, label in THRESHOLD_LABELS.items():
        message = message.replace(name, f"“{label}”")
    return message[:1].upper() + message[1:]


# What a sites row holds per threshold: the site's own value, or None to follow the active model's.
OwnThresholds = dict[str, float | None]


@dataclass(frozen=True, slots=True)
class Proposal:
    """What saving the form would store in the sites row, and the thresholds the site would then decide with."""

    own: OwnThresholds
    thresholds: Thresholds


def _active_card() -> tuple[ModelVersion | None, dict[str, Any]]:
    row = registry.active_version(db())
    return row, dict(row.card) if row is not None else {}


def _own(site: Site) -> OwnThresholds:
    return {
        "spam_reject": site.spam_reject_threshold,
        "spam_hold": site.spam_hold_threshold,
        "advice_hold": site.advice_hold_threshold,
    }


def _store_own(site: Site, own: OwnThresholds) -> None:
    site.spam_reject_threshold = own["spam_reject"]
    site.spam_hold_threshold = own["spam_hold"]
    site.advice_hold_threshold = own["advice_hold"]


def _shown(value: float) -> str:
    """A threshold as the page shows it and its slider (steps of 0.01) sends it back."""
    return f"{value:.2f}"


def _told_apart(value: float, other: float) -> tuple[str, str]:
    """Two different values as the page shows them: with two decimals, or as many more as tell them apart
    (0.199 and 0.2 are "0.199" and "0.200", not both "0.20")."""
    for places in range(2, 18):
        shown = f"{value:.{places}f}", f"{other:.{places}f}"
        if shown[0] != shown[1]:
            return shown
    return repr(value), repr(other)


def _whose(value: float, own: float | None, model: float) -> str:
    """Whose the line in force (``value``) is: the site's own (``own``) or the model's (``model``). A reject
    line below the hold line in force is raised to it (``Thresholds.overridden``), the site's own too: said, with
    the value raised. The values are compared as they are, not as the page rounds them: a line raised from 0.199
    to 0.2 is not "0.20, the site's own"; where two decimals would show the two alike, it takes more."""
    if own is None and value == model:
        return f"{_shown(value)}, the model's"
    if own == value:
        return f"{_shown(value)}, the site's own"
    if own is not None:
        shown, own_shown = _told_apart(value, own)
        return f"{shown}, the site's own {own_shown}, raised to the hold"
    # The model's value is beside it ("use the model's"), with two decimals: named here where those show it alike.
    shown, model_shown = _told_apart(value, model)
    named = f" {model_shown}" if shown != _shown(value) else ""
    return f"{shown}, the model's{named}, raised to the hold"


def _whose_lines(thresholds: Thresholds, own: OwnThresholds, defaults: Thresholds) -> dict[str, str]:
    """``_whose`` per threshold: the page's "now" and "once saved" cells, and what its script shows after a preview."""
    return {name: _whose(getattr(thresholds, name), own[name], getattr(defaults, name)) for name in THRESHOLD_NAMES}


def _sent_values(args: Any) -> dict[str, float]:
    """The numbers the form sent for the thresholds it does not reset to the model's. Raises ValueError
    naming every value that is not a number between 0 and 1, so that one round trip shows them all."""
    sent, problems = _usable_values(args)
    if sent.get("spam_hold", 0.0) > sent.get("spam_reject", 1.0):  # said with the others, not on the next try
        problems.append("spam_hold must not be above spam_reject")
    if problems:
        raise ValueError("; ".join(problems))
    return sent


def _usable_values(args: Any) -> tuple[dict[str, float], list[str]]:
    """Of the values sent for the thresholds the form does not reset to the model's, the numbers between 0 and 1,
    and why each other one is refused."""
    sent: dict[str, float] = {}
    problems: list[str] = []
    for name in THRESHOLD_NAMES:
        if name not in args or args.get(f"follow_{name}") == "1":
            continue
        shown = str(args[name])[:40]  # echoed into the page and the flash cookie: not at any length
        try:
            value = float(args[name])
        except ValueError:
            problems.append(f"{name} must be a number between 0 and 1, got {shown}")
            continue
        if not 0 <= value <= 1:  # also refuses nan
            problems.append(f"{name} must be between 0 and 1, got {shown}")
            continue
        sent[name] = value
    return sent, problems


def _kept_or_changed(own: float | None, sent: float, now: float, model_default: float) -> float | None:
    """The row's value for a threshold the form sent: the form sends all three, so a value the admin
    left as the page showed it keeps what the row had; a site that followed the model keeps following
    it (the next model version's thresholds apply) unless the admin moved the value off the model's."""
    if _shown(sent) == _shown(now):
        return own
    if own is None and _shown(sent) == _shown(model_default):
        return None
    return sent


def _check_spam_order(sent: dict[str, float], thresholds: Thresholds) -> None:
    """Refuse a hold the admin set above the reject line they see instead of raising reject silently;
    only a hold above the model's own reject line means "never auto-reject below it" (`overridden`)."""
    if sent.get("spam_hold", thresholds.spam_hold) > sent.get("spam_reject", thresholds.spam_reject):
        raise ValueError("spam_hold must not be above spam_reject")


def _baseline(site: Site, defaults: Thresholds) -> tuple[OwnThresholds, Thresholds]:
    """The site's own values as a save starts from, and the thresholds it decides with now."""
    # A stored value out of range (only a hand edit of the database stores one) counts as not set, so that
    # saving what the page shows replaces it.
    row: OwnThresholds = {
        name: value if value is None or 0 <= value <= 1 else None for name, value in _own(site).items()
    }
    try:
        return row, defaults.overridden(**row)
    except ValueError:  # in range but contradictory (a hold line above the reject line): follow the model's
        return dict.fromkeys(THRESHOLD_NAMES), defaults


def _own_as_sent(
    args: Any, sent: dict[str, float], row: OwnThresholds, now: Thresholds, defaults: Thresholds
) -> OwnThresholds:
    """Per threshold, what saving stores for the usable values ``sent``; one not among them stays as it is."""
    own: OwnThresholds = {}
    for name in THRESHOLD_NAMES:
        if args.get(f"follow_{name}") == "1":
            own[name] = None
        elif name in sent:
            if args.get(f"pin_{name}") == "1":
                own[name] = sent[name]
            else:
                own[name] = _kept_or_changed(row[name], sent[name], getattr(now, name), getattr(defaults, name))
        else:
            own[name] = row[name]
    return own


def _proposal(args: Any, site: Site, defaults: Thresholds) -> Proposal:
    """The thresholds asked for: ``follow_<name>=1`` goes back to the model's, ``pin_<name>=1`` makes the
    value sent the site's own even where it equals the model's (the admin unticked "use the model's"), any
    other value sent is kept or changed (`_kept_or_changed`), one not sent stays as it is. Raises ValueError
    for impossible values."""
    row, now = _baseline(site, defaults)
    sent = _sent_values(args)
    own = _own_as_sent(args, sent, row, now, defaults)
    thresholds = defaults.overridden(**own)
    _check_spam_order(sent, thresholds)
    return Proposal(own, thresholds)


def _follows_as_sent(args: Any, site: Site, defaults: Thresholds) -> dict[str, bool]:
    """Per threshold, whether a refused page ticks "use the model's": as a page that took the same values would
    (a box sent ticked, or a value saving leaves following the model). The form's own preview sends no boxes,
    and reading only the boxes sent left them all unticked, telling the admin every threshold was the site's
    own. A value that is no number is the admin's own: unticked."""
    sent, _problems = _usable_values(args)
    row, now = _baseline(site, defaults)
    own = _own_as_sent(args, sent, row, now, defaults)
    unusable = {name for name in own if name in args and name not in sent and args.get(f"follow_{name}") != "1"}
    return {name: value is None and name not in unusable for name, value in own.items()}


def what_if(card: dict[str, Any], thresholds: Thresholds) -> dict[str, Any] | None:
    """The lead's evaluation.what_if on the held-out scores in the model card; None where unavailable."""
    function = getattr(evaluation, "what_if", None)
    if function is None or not card:
        return None
    try:
        result: dict[str, Any] = function(card, thresholds)
    except (KeyError, ValueError, TypeError):
        return None
    return result


def pr_curves(card: dict[str, Any]) -> dict[str, list[dict[str, Any]]] | None:
    function = getattr(evaluation, "pr_curve", None)
    if function is None or not card:
        return None
    try:
        return {label: function(card, label) for label in ("spam", "medical_advice")}
    except (KeyError, ValueError, TypeError):
        return None


@bp.get("/admin/sites/<row_id:site_id>/thresholds")
@admin_required
def thresholds(site_id: int) -> ResponseReturnValue:
    return _thresholds_page(db().get(Site, site_id) or abort(404), request.args)


def _echoed(sent: Any, current: Proposal, defaults: Thresholds) -> dict[str, str]:
    """What each threshold's input shows after the values sent were refused: what the admin sent, bad or not
    (cut as the error quotes it), so that they can see it and correct it, not the saved values again."""
    shown = {}
    for name in THRESHOLD_NAMES:
        if sent.get(f"follow_{name}") == "1":
            shown[name] = _shown(getattr(defaults, name))
        elif name in sent:
            shown[name] = str(sent[name])[:40]
        else:
            shown[name] = _shown(getattr(current.thresholds, name))
    return shown


def _thresholds_page(site: Site, sent: Any, refused: ValueError | None = None) -> ResponseReturnValue:
    """The page for the values ``sent`` (a preview's query, or a save's form that ``refused`` names as refused)."""
    row, card = _active_card()
    defaults = Thresholds.of_card(card)
    current = Proposal(_own(site), site_lines(defaults, site))
    problem = refused
    proposal: Proposal | None = None
    if problem is None:
        try:
            proposal = _proposal(sent, site, defaults)
        except ValueError as error:
            problem = error
    errors = []
    try:
        defaults.of_site(site)
    except ValueError as stored:  # the values stored, not those sent: said first
        errors.append(
            f"This site's stored thresholds cannot be used ({stored}); its comments are held as not_classified. "
            f"Save valid values or reset them to the model's, then send those comments back to the classifiers "
            f"with `moderation reclassify --site {site.name}`."
        )
    if problem is not None:
        errors.append(("Not saved: " if refused is not None else "") + threshold_problem(problem))
    shown = (
        {name: _shown(getattr(proposal.thresholds, name)) for name in THRESHOLD_NAMES}
        if proposal is not None
        else _echoed(sent, current, defaults)
    )
    page = render_template(
        "admin/thresholds.html",
        site=site,
        model=row,
        names=THRESHOLD_NAMES,
        defaults=defaults,
        current=current.thresholds,
        whose_now=_whose_lines(current.thresholds, current.own, defaults),
        # None when refused: the page then shows what was sent, and no figures as if they were its effect.
        whose_proposed=_whose_lines(proposal.thresholds, proposal.own, defaults) if proposal is not None else None,
        follows=(
            {name: own is None for name, own in proposal.own.items()}
            if proposal is not None
            else _follows_as_sent(sent, site, defaults)
        ),
        shown=shown,
        sent=sent,
        errors=errors,
        refused=problem is not None,
        labels=THRESHOLD_LABELS,
        effect_now=what_if(card, current.thresholds),
        effect_proposed=what_if(card, proposal.thresholds) if proposal is not None else None,
        previewed="spam_reject" in sent and not errors,
    )
    return (page, REFUSED_STATUS) if problem is not None else page


@bp.get("/admin/sites/<row_id:site_id>/thresholds/preview")
@admin_required
def thresholds_preview(site_id: int) -> ResponseReturnValue:
    site = db().get(Site, site_id) or abort(404)
    _row, card = _active_card()
    defaults = Thresholds.of_card(card)
    try:
        proposal = _proposal(request.args, site, defaults)
    except ValueError as problem:
        return jsonify(error=threshold_problem(problem)), 400
    effect = what_if(card, proposal.thresholds)
    return jsonify(
        available=effect is not None,
        effect=effect,
        current=what_if(card, site_lines(defaults, site)),
        curves=pr_curves(card),
        proposed={name: getattr(proposal.thresholds, name) for name in THRESHOLD_NAMES},
        # Per threshold, whether saving makes it the site's own (a number) or follows the model (null).
        own=proposal.own,
        # Per threshold, whose it is once saved, as the page says it (``_whose``): the page's script shows it.
        sources=_whose_lines(proposal.thresholds, proposal.own, defaults),
    )


@bp.post("/admin/sites/<row_id:site_id>/thresholds")
@admin_required
def thresholds_save(site_id: int) -> ResponseReturnValue:
    session = db()
    site = session.get(Site, site_id) or abort(404)
    if request.form.get("reset"):
        _store_own(site, dict.fromkeys(THRESHOLD_NAMES))
        session.commit()
        flash(f"{site.name} uses the model's default thresholds again.", "info")
        return redirect(url_for("dashboard.thresholds", site_id=site_id))
    try:
        proposal = _proposal(request.form, site, Thresholds.of_card(_active_card()[1]))
    except ValueError as problem:
        # The page again with what was sent (a redirect would show the saved values), nothing stored.
        return _thresholds_page(site, request.form, refused=problem)
    _store_own(site, proposal.own)
    session.commit()
    flash(f"Thresholds of {site.name} saved; they apply to the next comments decided.", "info")
    return redirect(url_for("dashboard.thresholds", site_id=site_id))


# --- block and allow lists -----------------------------------------------------------------------


@bp.get("/admin/lists")
@admin_required
def lists() -> ResponseReturnValue:
    return _lists_page()


def _lists_page(refused: str | None = None, entered: dict[str, str] | None = None) -> ResponseReturnValue:
    """The page; after a ``refused`` form, with the error and the new entry's fields as ``entered`` (the site
    as the id sent), answered with REFUSED_STATUS."""
    session = db()
    entries = session.scalars(select(ListEntry).order_by(ListEntry.list_kind, ListEntry.field, ListEntry.value)).all()
    sites = session.scalars(select(Site).order_by(Site.name)).all()
    entered = entered or {"list_kind": KINDS[0], "field": FIELDS[0], "value": "", "site_id": ""}
    page = render_template(
        "admin/lists.html",
        entries=entries,
        allowing_nothing={entry.id for entry in entries if not can_allow(entry)},
        sites=sites,
        kinds=KINDS,
        fields=FIELDS,
        # From the policy's own constant, which decide() applies: the page cannot tell another rule.
        allow_listed_skips=[REASON_LABELS[reason] for reason in ALLOW_LISTED_SKIPS],
        errors=[refused] if refused is not None else [],
        entered=entered,
        # A site id sent that names no site is kept as sent (its own option), not shown as "all sites", which
        # sending the form again would then add the entry for.
        unknown_site=entered["site_id"] if entered["site_id"] not in {str(site.id) for site in sites} else "",
    )
    return (page, REFUSED_STATUS) if refused is not None else page


@bp.post("/admin/lists")
@admin_required
def lists_add() -> ResponseReturnValue:
    session = db()
    kind, field, value = (request.form.get(name, "") for name in ("list_kind", "field", "value"))
    site_field = request.form.get("site_id", "")
    site_id = form_row_id(site_field) if site_field else None
    try:
        if site_field and site_id is None:
            raise ListError(f"there is no site with id {site_field[:40]!r}")
        add_entry(session, kind, field, value, site_id, me().id, datetime.now(UTC))
        session.commit()
    except ListError as error:  # also an entry another admin added since the check (add_entry says so)
        session.rollback()
        # What was chosen and typed, to correct it (cut as the column and the error cut them: echoed into the page).
        entered = {"list_kind": kind, "field": field, "value": value[:MAX_LIST_VALUE_CHARS], "site_id": site_field[:40]}
        return _lists_page(f"Not added: {error}.", entered)
    flash("Added; it applies to the next comments decided.", "info")
    return redirect(url_for("dashboard.lists"))


@bp.post("/admin/lists/<row_id:entry_id>/delete")
@admin_required
def lists_delete(entry_id: int) -> ResponseReturnValue:
    session = db()
    entry = session.get(ListEntry, entry_id) or abort(404)
    session.delete(entry)
    session.commit()
    flash(f"Removed {entry.value!r} from the {entry.list_kind} list.", "info")
    return redirect(url_for("dashboard.lists"))


# --- moderators ----------------------------------------------------------------------------------


@bp.get("/admin/moderators")
@admin_required
def moderators() -> ResponseReturnValue:
    return _moderators_page()


ROLES = (Role.MODERATOR, Role.ADMIN)


def _moderators_page(refused: str | None = None, entered: dict[str, str] | None = None) -> ResponseReturnValue:
    """The page; after a ``refused`` form, with the error and the new account's fields as ``entered`` (the
    password is never sent back), answered with REFUSED_STATUS as the thresholds page answers a refusal."""
    page = render_template(
        "admin/moderators.html",
        moderators=db().scalars(select(Moderator).order_by(Moderator.email)).all(),
        errors=[refused] if refused is not None else [],
        entered=entered or {"email": "", "role": Role.MODERATOR},
    )
    return (page, REFUSED_STATUS) if refused is not None else page


@bp.post("/admin/moderators")
@admin_required
def moderators_add() -> ResponseReturnValue:
    session = db()
    email, role = request.form.get("email", ""), request.form.get("role", Role.MODERATOR)
    try:
        create_moderator(session, email, request.form.get("password", ""), role, datetime.now(UTC))
        session.commit()
    except AccountError as error:  # also an address another admin added since the check (create_moderator says so)
        session.rollback()
        # What was typed, to correct it (an address cut at the column's length: it is echoed into the page).
        entered = {"email": email[:MAX_EMAIL_CHARS], "role": role if role in ROLES else Role.MODERATOR}
        return _moderators_page(f"Not added: {error}.", entered)
    flash("Moderator added.", "info")
    return redirect(url_for("dashboard.moderators"))


@bp.post("/admin/moderators/<row_id:moderator_id>")
@admin_required
def moderators_update(moderator_id: int) -> ResponseReturnValue:
    session = db()
    target = session.get(Moderator, moderator_id) or abort(404)
    if target.id == me().id:
        return _moderators_page("You cannot change your own role or deactivate yourself.")
    role, active = request.form.get("role"), request.form.get("active")
    # A value other than these (from a script or an edited form) was ignored and the change still reported done.
    # Refused as the page refuses others (said at the top of the page it answers with), and nothing is changed.
    problems = []
    if role is not None and role not in ROLES:
        problems.append(f"the role must be moderator or admin, not {role[:40]!r}")
    if active is not None and active not in ("0", "1"):
        problems.append(f"active must be 0 or 1, not {active[:40]!r}")
    if role is None and active is None:
        problems.append("send a role (moderator or admin) or active (0 or 1)")
    if problems:
        return _moderators_page(f"Nothing changed for {target.email}: {'; '.join(problems)}.")
    if role is not None:
        target.role = role
    if active is not None:
        target.is_active = active == "1"
    session.commit()
    flash(f"{target.email} updated.", "info")
    return redirect(url_for("dashboard.moderators"))


# --- failing and dead-lettered callbacks ---------------------------------------------------------


@bp.get("/admin/callbacks")
@admin_required
def dead_letters() -> ResponseReturnValue:
    session = db()
    paused = select(Site.id).where(Site.callbacks_paused_by.is_not(None))
    # Held back, or waiting while the site's callbacks are off: claimed by nothing until they are on again.
    held_back = (CallbackDelivery.status == DeliveryStatus.DISABLED) | callbacks.waiting_while_off()
    held_for_paused = CallbackDelivery.site_id.in_(paused) & held_back
    rows = session.scalars(
        select(CallbackDelivery)
        .where((CallbackDelivery.status == DeliveryStatus.DEAD) | held_back, ~held_for_paused)
        .order_by(CallbackDelivery.id.desc())
        .limit(200)
    )
    # A paused site's held-back callbacks are not failures: counted apart, so they never crowd the failures out.
    held = session.scalar(select(func.count()).select_from(CallbackDelivery).where(held_for_paused)) or 0
    return render_template(
        "admin/callbacks.html",
        # Shown first: a failing endpoint is seen while its callbacks are retried, hours before they are dead.
        failing=callbacks.failing_callbacks(session),
        now=datetime.now(UTC),
        deliveries=rows.all(),
        held_for_paused=held,
    )


@bp.post("/admin/callbacks/<row_id:delivery_id>/replay")
@admin_required
def replay(delivery_id: int) -> ResponseReturnValue:
    session = db()
    try:
        delivery = callbacks.replay(session, delivery_id, datetime.now(UTC))
    except LookupError:
        abort(404)
    except callbacks.ReplayError as refused:  # a second click, or another admin's replay first: nothing done
        session.rollback()
        flash(str(refused), "error")
        return redirect(url_for("dashboard.dead_letters"))
    session.commit()
    if delivery.status == DeliveryStatus.DISABLED:
        flash(f"Callback {delivery_id} queued again; it is sent when the site's callbacks are resumed.", "info")
        return redirect(url_for("dashboard.dead_letters"))
    # Committed as pending: if the broker is down, beat's retry loop sends it.
    with contextlib.suppress(Exception):
        runtime().publisher.notify(delivery_id)
    flash(f"Callback {delivery_id} queued again.", "info")
    return redirect(url_for("dashboard.dead_letters"))


# --- models --------------------------------------------------------------------------------------


@bp.get("/admin/models")
@admin_required
def models() -> ResponseReturnValue:
    return render_template("admin/models.html", versions=registry.list_versions(db()))


@bp.post("/admin/models/<version>/activate")
@admin_required
def models_activate(version: str) -> ResponseReturnValue:
    session = db()
    try:
        registry.activate(session, version, model_dir=runtime().models.model_dir)
        session.commit()
        flash(f"Model {version} is active; workers switch within a few seconds.", "info")
    except registry.RegistryError as error:
        session.rollback()
        flash(str(error), "error")
    return redirect(url_for("dashboard.models"))
