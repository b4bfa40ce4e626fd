"""Celery: the app, its at-least-once configuration, the tasks, the queues and the beat schedule.

Import ``workers.app`` for the Celery app; ``workers.queues`` names the queues without importing Celery.
"""
