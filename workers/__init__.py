"""Celery: the app, its at-least-once configuration, the tasks and the beat schedule."""

from workers.app import CeleryOptions, create_celery
from workers.publisher import CeleryPublisher

__all__ = ["CeleryOptions", "CeleryPublisher", "create_celery"]
