"""Per-request access to the process's Runtime, and a database session closed at teardown."""

from __future__ import annotations

from flask import current_app, g
from sqlalchemy.orm import Session

from models.db import close_at_teardown
from moderation.runtime import Runtime


def runtime() -> Runtime:
    value: Runtime = current_app.extensions["moderation"]
    return value


def db() -> Session:
    if "db_session" not in g:
        g.db_session = runtime().sessions()
    session: Session = g.db_session
    return session


def close_db(_error: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        close_at_teardown(session)
