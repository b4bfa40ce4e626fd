"""WSGI entry for gunicorn: ``gunicorn 'server.wsgi:create_wsgi_app()'``."""

from flask import Flask
from gunicorn.errors import AppImportError
from pydantic import ValidationError

from server.factory import create_app
from server.logs import configure_logging
from server.settings import Settings, describe_invalid_settings


def create_wsgi_app() -> Flask:
    try:
        settings = Settings()
    except ValidationError as error:
        # gunicorn prints this error's message and stops; any other error is a traceback from every worker.
        raise AppImportError(describe_invalid_settings(error)) from None
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
