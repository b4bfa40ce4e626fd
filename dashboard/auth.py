"""Sign-in and sign-out: argon2 passwords, Flask-Login sessions, rate-limited attempts, roles."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from flask import (
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_url,
    login_user,
    logout_user,
)
from itsdangerous import BadSignature, URLSafeTimedSerializer
from limits import parse_many
from werkzeug.exceptions import HTTPException, TooManyRequests
from werkzeug.wrappers import Response as BaseResponse

from dashboard.blueprint import bp
from dashboard.context import db, wants_json
from models.entities import Moderator, author_network
from moderation.accounts import authenticate
from moderation.keyed import keyed_digest
from moderation.ratelimits import SharedLimits, pseudonym

F = TypeVar("F", bound=Callable[..., Any])

login_manager = LoginManager()
login_manager.login_view = "dashboard.login"
login_manager.login_message = "Sign in to review comments."
login_manager.session_protection = "strong"
SIGNED_OUT_MESSAGE = "Your session has ended: sign in again."


# A browser that signed in as someone carries this cookie for them: a "device cookie" (OWASP's defence
# against account lockout), so that others' failed attempts on that e-mail never lock that browser out.
DEVICE_COOKIE = "moderation_device"
DEVICE_LIFETIME = timedelta(days=90)


class LoginLimits:
    """Sign-in attempts per client IP (an IPv6 /64 as one client) and per e-mail, exact over a moving window,
    shared via Redis.

    A browser that signed in as the e-mail before is counted by itself instead: anyone may fail on an
    admin's address until its count is full, but that only locks out browsers the admin never used.

    Each is named in Redis by a keyed hash (``moderation.ratelimits.pseudonym``), never by the address, the
    e-mail or the device id: Redis's append-only file keeps key names long after they expire.
    """

    def __init__(self, redis_url: str, limit: str, secret_key: str | bytes) -> None:
        self._items = parse_many(limit)  # a bad setting stops the start; "10/minute;50/hour" is two limits
        self._counts = SharedLimits(redis_url, "dashboard-login", "moving-window")
        self._secret_key = secret_key

    def count_attempt(self, client_ip: str, email: str, device: str | None = None) -> None:
        """Count a sign-in attempt; 429 (with the seconds to wait) once a count is over the limit."""
        keys = [("device", device)] if device else [("ip", client_network(client_ip)), ("email", email)]
        for scope, value in keys:
            wait = self._counts.over_limit(self._items, scope, pseudonym(self._secret_key, value))
            if wait is not None:
                raise TooManyRequests(retry_after=wait)


def client_network(address: str) -> str:
    """The client a sign-in attempt is counted for: an IPv4 address itself (also one written IPv4-mapped, as a
    dual-stack socket reports it), an IPv6 one by its /64, which one subscriber holds whole: counted by the
    exact address, a password sprayed from one home line takes a fresh address per try. As the author checks
    count an author (models.entities.author_network)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:  # "unknown", or whatever a proxy put there: counted as it is
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return author_network(str(parsed))


def _devices() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key or "", salt="dashboard-sign-in-device")


def _email_digest(email: str) -> str:
    # The cookie is signed, not encrypted: anyone holding it can read it. It names the account by a keyed
    # digest, which confirms no guess of the address without the secret key (a plain hash would).
    return keyed_digest(current_app.secret_key or "", "sign-in-device", email.encode()).hex()


def known_device(email: str) -> str | None:
    """This browser's device id, if its device cookie is ours, still fresh, and for ``email``."""
    token = request.cookies.get(DEVICE_COOKIE)
    if not token:
        return None
    try:
        data = _devices().loads(token, max_age=int(DEVICE_LIFETIME.total_seconds()))
    except BadSignature:  # tampered, signed with another secret key, or expired
        return None
    if not isinstance(data, dict) or not hmac.compare_digest(str(data.get("account")), _email_digest(email)):
        return None
    return str(data.get("device"))


def remember_device(response: BaseResponse, email: str) -> None:
    """After a sign-in as ``email``: this browser is known for it (a new device id each time)."""
    token = _devices().dumps({"account": _email_digest(email), "device": secrets.token_urlsafe(16)})
    response.set_cookie(
        DEVICE_COOKIE,
        token,
        max_age=int(DEVICE_LIFETIME.total_seconds()),
        httponly=True,
        samesite="Lax",
        secure=current_app.config["SESSION_COOKIE_SECURE"],
    )


class SignedIn(UserMixin):
    """What the session knows about a moderator; the row is re-read from the database per request."""

    def __init__(self, moderator: Moderator) -> None:
        self.id = moderator.id
        self.email = moderator.email
        self.role = moderator.role
        self.active = moderator.is_active
        self.session_token = moderator.session_token

    def get_id(self) -> str:
        # Flask-Login's "alternative token": the cookie names the account AND its current session token, so
        # rotating the token in the row (sign-out, new password, deactivation) ends every copy of the cookie.
        return f"{self.id}:{self.session_token}"

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@login_manager.user_loader
def load_moderator(session_id: str) -> SignedIn | None:
    moderator_id, _, token = session_id.partition(":")
    if not moderator_id.isdecimal() or not token:
        return None  # a cookie signed before session tokens existed, or garbage
    moderator = db().get(Moderator, int(moderator_id))
    if moderator is None or not moderator.is_active:
        return None
    if not hmac.compare_digest(moderator.session_token.encode(), token.encode()):
        return None
    return SignedIn(moderator)


def admin_required(view: F) -> F:
    @wraps(view)
    @login_required
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def _typed_email() -> str:
    return request.form.get("email", "").strip().lower()[:320]


def _count_login_attempt() -> None:
    limits: LoginLimits = current_app.extensions["login_limits"]
    email = _typed_email()
    limits.count_attempt(request.remote_addr or "unknown", email, known_device(email))


def safe_next(target: str | None) -> str:
    """A page of this site to go to after sign-in, or the queue.

    Only a path (never an absolute or scheme-relative URL: no open redirect), and only one that answers GET:
    a form sent after the session ended names its POST-only URL, which would answer 405 after sign-in.
    """
    # Browsers read "/\\host" like "//host": refuse backslashes too.
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and not any(ord(character) < 32 or ord(character) == 127 for character in target)  # CR/LF: a header
        and not urlsplit(target).netloc
        and answers_get(urlsplit(target).path)
    ):
        return target
    return url_for("dashboard.queue")


def answers_get(path: str) -> bool:
    try:
        current_app.url_map.bind("").match(path, method="GET")
    except HTTPException:  # NotFound, MethodNotAllowed, and RequestRedirect (a slash added) all say no
        return False
    return True


def asks_for_json() -> bool:
    """The page's scripts (fetch with Accept: application/json, or XHR): they read an answer, not a page."""
    return wants_json() or request.headers.get("X-Requested-With") == "XMLHttpRequest"


def page_to_return_to() -> str:
    """Where sign-in should lead back to: the page asked for or, for a form or an action, the page it was
    sent from (the Referer, when it is this site's), as long as that page answers GET; else the queue."""
    url = request.url if request.method in ("GET", "HEAD") else request.referrer or request.url
    parts = urlsplit(url)
    if parts.netloc and parts.netloc != request.host:
        return safe_next(None)
    return safe_next(urlunsplit(("", "", parts.path, parts.query, "")))


def sign_in_again() -> ResponseReturnValue:
    """No live session (never signed in, signed out, expired, deactivated, new password).

    The page's scripts get a 401 they can explain: fetch would follow a redirect to the sign-in page and
    report its 200, and the moderator would think the action was saved. A browser page goes to sign in.
    """
    target = login_url("dashboard.login", next_url=page_to_return_to())
    if asks_for_json():
        return jsonify(error="signed_out", message=SIGNED_OUT_MESSAGE, login_url=target), 401
    flash(login_manager.login_message, login_manager.login_message_category)
    return redirect(target)


login_manager.unauthorized_handler(sign_in_again)  # a statement, not a decorator: it keeps the function typed


def session_has_ended() -> bool:
    """A form that needs a session, sent without one: after sign-out in another tab (or an expired session)
    its CSRF token belongs to the ended session, but the problem to tell is the session, not the token."""
    return request.endpoint != "dashboard.login" and not current_user.is_authenticated


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    if request.method == "POST":
        _count_login_attempt()
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.queue"))
    if request.method == "POST":
        database = db()
        moderator = authenticate(
            database, request.form.get("email", ""), request.form.get("password", ""), datetime.now(UTC)
        )
        if moderator is not None:
            database.commit()
            start_session(SignedIn(moderator))
            response = redirect(safe_next(request.args.get("next")))
            remember_device(response, _typed_email())
            return response
        flash("Wrong e-mail or password, or the account is deactivated.", "error")
        return render_template("login.html", email=request.form.get("email", "")), 401
    return render_template("login.html", email="")


def start_session(signed_in: SignedIn) -> None:
    """A new session: nothing from the cookie the browser came with survives sign-in (session fixation).

    In particular the CSRF token is new, so someone who planted that cookie cannot forge this user's forms.
    """
    session.clear()
    login_user(signed_in)


def renew_session(response: Response) -> Response:
    """Sign a signed-in session's cookie again on every dashboard answer, with the time of this request.

    Flask refuses a cookie signed longer than PERMANENT_SESSION_LIFETIME ago (DASHBOARD_SESSION_HOURS), so a
    session idle that long, or a copy of its cookie left unused that long, has ended. The session is not
    made permanent (Flask's own way to renew it): Flask-Login then weakens its strong session protection,
    which signs out a cookie presented by another browser, to basic (it only marks the session not fresh).
    """
    if request.blueprint == "dashboard" and "_user_id" in session:
        session.modified = True
    return response


@bp.post("/logout")
@login_required
def logout() -> ResponseReturnValue:
    # A signed cookie would keep working if copied before sign-out; a new token in the row ends it (and the
    # account's sessions on other devices: signing out means signing out everywhere).
    database = db()
    moderator = database.get(Moderator, current_user.id)
    if moderator is not None:
        moderator.end_sessions()
        database.commit()
    session.clear()
    logout_user()
    flash("Signed out.", "info")
    return redirect(url_for("dashboard.login"))


@bp.get("/logout")
def logout_typed() -> ResponseReturnValue:
    """Someone typed the address: send them on rather than show a 405. Signing out stays a POST with a CSRF
    token, so a link or an image on another page cannot sign a moderator out on every device."""
    if not current_user.is_authenticated:
        return redirect(url_for("dashboard.login"))
    flash("To sign out, use Sign out at the top of the page.", "info")
    return redirect(url_for("dashboard.queue"))
