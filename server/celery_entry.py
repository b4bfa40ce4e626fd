"""Celery entry for ``celery -A server.celery_entry ...`` (the CLI's `moderation worker` does the same)."""

from server.factory import build_celery
from server.settings import Settings

celery = build_celery(Settings())
