"""Sign-in and sign-out: argon2 passwords, Flask-Login sessions, rate-limited attempts, roles."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user

from dashboard.blueprint import bp
from dashboard.context import db
from models.entities import Moderator
from moderation.accounts import authenticate

F = TypeVar("F", bound=Callable[..., Any])

login_manager = LoginManager()
login_manager.login_view = "dashboard.login"
login_manager.login_message = "Sign in to review comments."
login_manager.session_protection = "strong"
limiter = Limiter(key_func=get_remote_address, default_limits=[])


class SignedIn(UserMixin):
    """What the session knows about a moderator; the row is re-read from the database per request."""

    def __init__(self, moderator: Moderator) -> None:
        self.id = moderator.id
        self.email = moderator.email
        self.role = moderator.role
        self.active = moderator.is_active

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@login_manager.user_loader
def load_moderator(moderator_id: str) -> SignedIn | None:
    try:
        moderator = db().get(Moderator, int(moderator_id))
    except ValueError:
        return None
    return SignedIn(moderator) if moderator is not None and moderator.is_active else None


def admin_required(view: F) -> F:
    @wraps(view)
    @login_required
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def _login_limit() -> str:
    return str(current_app.config["SETTINGS"].login_rate_limit)


def _login_email() -> str:
    return "login-email:" + request.form.get("email", "").strip().lower()[:320]


def safe_next(target: str | None) -> str:
    """Only a path on this site: never an absolute or scheme-relative URL (no open redirect)."""
    # Browsers read "/\\host" like "//host": refuse backslashes too.
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and not urlsplit(target).netloc
    ):
        return target
    return url_for("dashboard.queue")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
@limiter.limit(_login_limit, methods=["POST"], key_func=_login_email)
def login() -> ResponseReturnValue:
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.queue"))
    if request.method == "POST":
        session = db()
        moderator = authenticate(
            session, request.form.get("email", ""), request.form.get("password", ""), datetime.now(UTC)
        )
        if moderator is not None:
            session.commit()
            login_user(SignedIn(moderator))
            return redirect(safe_next(request.args.get("next")))
        flash("Wrong e-mail or password, or the account is deactivated.", "error")
        return render_template("login.html", email=request.form.get("email", "")), 401
    return render_template("login.html", email="")


@bp.post("/logout")
@login_required
def logout() -> ResponseReturnValue:
    logout_user()
    flash("Signed out.", "info")
    return redirect(url_for("dashboard.login"))
