"""Flask intake: the signed comment webhook, the pull API and the OpenAPI document."""

from __future__ import annotations

from flask import Flask
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from webhooks import api, intake, openapi  # noqa: F401 - registers the routes on bp
from webhooks.blueprint import bp
from webhooks.context import close_db
from webhooks.responses import unavailable

__all__ = ["bp", "init_app"]


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.teardown_appcontext(close_db)

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeoutError)
    def database_unavailable(_error: Exception) -> ResponseReturnValue:
        # The database is down or overloaded: the site retries a 503; it must never see a 500 for this.
        return unavailable()
