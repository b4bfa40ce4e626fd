"""WSGI entry for gunicorn: ``gunicorn 'server.wsgi:create_wsgi_app()'``."""

from flask import Flask

from server.factory import create_app
from server.logs import configure_logging
from server.settings import Settings


def create_wsgi_app() -> Flask:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
