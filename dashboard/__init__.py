"""The moderators' dashboard: review queues, actions, admin pages and the overview, server-rendered."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, flash, render_template, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, CSRFProtect
from markupsafe import Markup, escape
from werkzeug.exceptions import HTTPException, TooManyRequests

from dashboard import admin, auth, overview, views  # noqa: F401 - registers the routes on bp
from dashboard.auth import LoginLimits, login_manager, renew_session, safe_next, session_has_ended, sign_in_again
from dashboard.blueprint import RowIdConverter, bp
from dashboard.context import close_db, wants_json
from models.entities import Decision
from models.text import INVISIBLE_RE
from moderation.explanations import explanation_worth_reading
from moderation.policy import Thresholds
from moderation.reasons import reason_label

__all__ = ["bp", "init_app", "method_not_allowed_page", "not_found", "wants_dashboard_page"]

csrf = CSRFProtect()

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
# Routes that machines call with their own authentication (signatures), never a browser form.
CSRF_EXEMPT_BLUEPRINTS = ("webhooks", "health")


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        SESSION_COOKIE_NAME="moderation_session",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=settings.session_cookie_secure,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        # The age Flask accepts a session cookie up to; renew_session signs it again on each request.
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.dashboard_session_hours),
    )
    app.url_map.converters["row_id"] = RowIdConverter  # before the blueprint's rules are added
    app.register_blueprint(bp)
    app.teardown_appcontext(close_db)
    login_manager.init_app(app)
    csrf.init_app(app)
    for name in CSRF_EXEMPT_BLUEPRINTS:
        if name in app.blueprints:
            csrf.exempt(app.blueprints[name])
    app.extensions["login_limits"] = LoginLimits(
        settings.broker_url, settings.login_rate_limit, app.config["SECRET_KEY"]
    )
    app.jinja_env.filters["highlight"] = highlight
    app.jinja_env.filters["driver_words"] = driver_words
    app.jinja_env.filters["score_drivers"] = score_drivers
    app.jinja_env.filters["http_url"] = is_http_url
    app.jinja_env.filters["reason_label"] = reason_label
    app.after_request(security_headers)
    app.after_request(renew_session)


def security_headers(response: Response) -> Response:
    if request.blueprint == "dashboard" or under_dashboard(request.path):  # its error page for an unknown address
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def is_http_url(url: str | None) -> bool:
    """Only http(s) links are clickable: a javascript: or data: URL from a comment stays text."""
    return bool(url) and re.match(r"^https?://[^\s]+$", url or "", re.IGNORECASE) is not None


SCORES_EXPLAINED = (("spam", "Spam", "spam_score"), ("medical_advice", "Medical advice", "advice_score"))
DRIVERS_SHOWN = 4  # words per score


def score_drivers(decision: Decision | None, lines: Thresholds) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(label, its name, the words that pushed it up most) for each score a reader should look at (those
    ``explanation_worth_reading`` keeps at ``lines``, the lines the decision was made with)."""
    if decision is None or not decision.explanation:
        return []
    scores = {label: getattr(decision, score) for label, _, score in SCORES_EXPLAINED}
    readable = explanation_worth_reading(decision.explanation, scores, lines)
    return [
        (label, name, readable[label][:DRIVERS_SHOWN]) for label, name, _ in SCORES_EXPLAINED if readable.get(label)
    ]


def driver_words(drivers: list[tuple[str, str, list[dict[str, Any]]]]) -> list[str]:
    """The words of ``score_drivers``, to mark in the text."""
    return [str(item.get("feature", "")) for _, _, items in drivers for item in items]


def highlight(text: str, words: list[str]) -> Markup:
    """The comment escaped (it is hostile input), with the words that drove a score wrapped in <mark> and the
    characters drawn as nothing shown (``show_invisible``)."""
    words = sorted({w for w in words if w and len(w) > 1}, key=len, reverse=True)
    if not words:
        return show_invisible(str(escape(text)))
    pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE)
    out: list[str] = []
    last = 0
    for match in pattern.finditer(text):
        out.append(str(escape(text[last : match.start()])))
        out.append(f"<mark>{escape(match.group(0))}</mark>")
        last = match.end()
    out.append(str(escape(text[last:])))
    return show_invisible("".join(out))


def show_invisible(escaped: str) -> Markup:
    """Escaped text with each character the models leave out as invisible (a zero-width space inside a word,
    a soft hyphen, a direction mark...) drawn as a marker naming it: a moderator sees what the reason
    ``hidden_characters`` found, and such a character can no longer reorder or hide what is shown."""
    marked = INVISIBLE_RE.sub(
        lambda found: "".join(
            f'<span class="hidden-char" title="invisible character U+{ord(c):04X}">U+{ord(c):04X}</span>'
            for c in found.group(0)
        ),
        escaped,
    )
    return Markup(marked)  # noqa: S704 - escaped by the caller; only the markers, built here, are added


@bp.errorhandler(CSRFError)
def csrf_refused(error: CSRFError) -> ResponseReturnValue:
    if session_has_ended():
        return sign_in_again()  # signing in again is the fix, not reloading the page
    if wants_json():
        return {"ok": False, "message": f"refused: {error.description}"}, 400
    # Reloading this answer would send the same stale form again: the way on is the form's page, loaded anew.
    message = f"Refused: {error.description} Open the page again and repeat what you did."
    back = page_came_from()
    label = "Back to that page" if back else None
    return render_template("error.html", code=400, message=message, back=back, back_label=label), 400


def page_came_from() -> str | None:
    """The dashboard page a form was sent from, by its Referer: a page of this host that answers GET, or None."""
    came_from = urlsplit(request.referrer or "")
    path = came_from.path + (f"?{came_from.query}" if came_from.query else "")
    public_url = current_app.config["SETTINGS"].public_url  # a proxy may pass on a Host of its own
    ours = {request.host} | ({urlsplit(public_url).netloc} if public_url else set())
    if came_from.netloc not in ours or not under_dashboard(came_from.path) or safe_next(path) != path:
        return None
    return path


@bp.errorhandler(403)
def forbidden(_error: Exception) -> ResponseReturnValue:
    return render_template("error.html", code=403, message="Only admins can open this page."), 403


@bp.errorhandler(404)
def not_found(_error: Exception) -> ResponseReturnValue:
    return render_template("error.html", code=404, message="No such page or comment."), 404


def method_not_allowed_page() -> str:
    """The body of a 405 under the dashboard (a GET of a form's address, say); the app adds the Allow header."""
    message = f"This address does not take a {request.method} request: use the page's links and buttons."
    return render_template("error.html", code=405, message=message)


def wants_dashboard_page() -> bool:
    """Whether a request that reached no dashboard view is still answered as the dashboard: a person's browser
    on an address under it (a mistyped or stale link), not a client asking for JSON.

    Flask hands a URL that matches no route to the app's handlers only, never to the blueprint's.
    """
    return under_dashboard(request.path) and not wants_json()


def under_dashboard(path: str) -> bool:
    prefix = bp.url_prefix or ""
    return path == prefix or path.startswith(prefix + "/")


@bp.errorhandler(429)
def too_many(error: HTTPException) -> ResponseReturnValue:
    flash("Too many sign-in attempts. Wait a minute and try again.", "error")
    retry_after = error.retry_after if isinstance(error, TooManyRequests) and error.retry_after else 60
    typed = request.form.get("email", "")[:320] if request.method == "POST" else ""  # kept, as after a wrong password
    return render_template("login.html", email=typed), 429, {"Retry-After": str(retry_after)}
