"""Publishing tasks by name, so the web process needs no task code, only a broker connection."""

from __future__ import annotations

from typing import Any

from celery import Celery

from workers.app import CLASSIFY_TASK, NOTIFY_TASK

# Fail fast when the broker is down: the outbox relay and the callback retry loop cover the gap.
FAIL_FAST = {"max_retries": 0}


class CeleryPublisher:
    def __init__(self, celery: Celery) -> None:
        self._celery = celery

    def _send(self, name: str, **kwargs: Any) -> None:
        # The arguments are a few ids: their plain repr is what Celery's saferepr would write for the
        # message's argsrepr/kwargsrepr headers, at a fraction of its cost (once per webhook).
        self._celery.send_task(
            name, kwargs=kwargs, retry=False, retry_policy=FAIL_FAST, argsrepr="()", kwargsrepr=repr(kwargs)
        )

    def classify(self, comment_id: int, revision: int | None = None) -> None:
        # The revision lets a worker skip a message whose text it already decided. The relay sends none, and
        # that is how a worker tells relayed work, whose runs it counts (workers.tasks.classify_comment).
        if revision is None:
            self._send(CLASSIFY_TASK, comment_id=comment_id)
        else:
            self._send(CLASSIFY_TASK, comment_id=comment_id, revision=revision)

    def notify(self, delivery_id: int) -> None:
        self._send(NOTIFY_TASK, delivery_ids=[delivery_id])

    def notify_many(self, delivery_ids: list[int]) -> None:
        self._send(NOTIFY_TASK, delivery_ids=delivery_ids)
