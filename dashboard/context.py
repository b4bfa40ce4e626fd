"""Per-request database session, the process's Runtime, and the signed-in moderator."""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, g, request
from flask_login import current_user
from sqlalchemy.orm import Session

from models.db import close_at_teardown
from models.entities import Moderator
from moderation.runtime import Runtime


def runtime() -> Runtime:
    value: Runtime = current_app.extensions["moderation"]
    return value


def db() -> Session:
    if "dashboard_db" not in g:
        g.dashboard_db = runtime().sessions()
    session: Session = g.dashboard_db
    return session


def close_db(_error: BaseException | None = None) -> None:
    session = g.pop("dashboard_db", None)
    if session is not None:
        close_at_teardown(session)


def me() -> Moderator:
    """The signed-in moderator's row in this request's session."""
    moderator = db().get(Moderator, current_user.id)
    if moderator is None or not moderator.is_active:
        abort(403)
    return moderator


def wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def settings() -> Any:
    return current_app.config["SETTINGS"]
