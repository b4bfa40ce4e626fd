"""Celery entry for ``celery -A server.celery_entry ...`` (the CLI's `moderation worker` does the same)."""

from pydantic import ValidationError

from server.factory import build_celery
from server.settings import Settings, describe_invalid_settings


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        # Celery would print a long import traceback; this is what the `moderation` command says too.
        raise SystemExit(describe_invalid_settings(error)) from None


celery = build_celery(_settings())
