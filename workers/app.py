"""The Celery app, configured for at-least-once delivery of idempotent tasks."""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from kombu.entity import Exchange, Queue

from moderation.runtime import Runtime
from workers.broker import transport_for
from workers.queues import CALLBACK_QUEUE, CLASSIFY_QUEUE, TRAINING_QUEUE, WORKER_QUEUES

CLASSIFY_TASK = "moderation.classify"
NOTIFY_TASK = "moderation.notify"
RELAY_OUTBOX_TASK = "moderation.relay_outbox"
# Seconds after which a worker drops beat's relay message instead of running it: one that waited longer
# behind a backlog has nothing to add to the next. The relay reads from it when it was sent.
RELAY_EXPIRES = 30.0
RETRY_CALLBACKS_TASK = "moderation.retry_due_callbacks"
PURGE_RECEIPTS_TASK = "moderation.purge_receipts"
RETRAIN_TASK = "moderation.retrain"
RETENTION_TASK = "moderation.apply_retention"


@dataclass(frozen=True, slots=True)
class CeleryOptions:
    broker_url: str
    relay_interval: float = 5.0
    callback_retry_interval: float = 5.0
    visibility_timeout: int = 3600
    publish_timeout: float = 2.0
    retrain_interval_hours: float = 0.0  # 0: no scheduled retraining
    retain_personal_days: int = 30  # 0: keep
    retain_closed_days: int = 365  # 0: keep
    retention_interval_hours: float = 1.0


class ModerationCelery(Celery):
    """A Celery app that builds its Runtime lazily, once per process (after fork, never before)."""

    runtime_factory: Callable[[], Runtime]
    _runtime: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = self.runtime_factory()
        return self._runtime

    def reset_runtime(self) -> None:
        self._runtime = None


def celery_config(options: CeleryOptions) -> dict[str, Any]:
    transport = {
        # A task not acknowledged within this time is redelivered; keep it above the longest task.
        "visibility_timeout": options.visibility_timeout,
        "socket_connect_timeout": options.publish_timeout,
        "socket_timeout": max(options.publish_timeout, 5.0),
        # Publishing connects through kombu's default channel, which retries a dead broker for seconds by
        # default. One quick try is enough: the outbox relay and the callback retry loop cover a failure.
        "max_retries": 1,
        "interval_start": 0,
        "interval_step": 0.1,
        "interval_max": 0.2,
    }
    return {
        "broker_url": options.broker_url,
        "broker_transport": transport_for(options.broker_url),
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": CLASSIFY_QUEUE,
        # Declared, so that any worker started without -Q (`celery -A server.celery_entry worker`) takes all;
        # each with its own exchange and key (given none, all would bind to the default exchange, and a
        # message published to that exchange would reach every queue).
        "task_queues": tuple(_queue(name) for name in WORKER_QUEUES),
        "task_routes": {
            NOTIFY_TASK: {"queue": CALLBACK_QUEUE},
            RETRY_CALLBACKS_TASK: {"queue": CALLBACK_QUEUE},
            RETRAIN_TASK: {"queue": TRAINING_QUEUE},
        },
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "beat_schedule": beat_schedule(options),
    }


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]


def beat_schedule(options: CeleryOptions) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "relay-outbox": {"task": RELAY_OUTBOX_TASK, "schedule": timedelta(seconds=options.relay_interval)},
        "retry-due-callbacks": {
            "task": RETRY_CALLBACKS_TASK,
            "schedule": timedelta(seconds=options.callback_retry_interval),
        },
        "purge-webhook-receipts": {"task": PURGE_RECEIPTS_TASK, "schedule": timedelta(hours=1)},
        "apply-retention": {
            "task": RETENTION_TASK,
            "schedule": timedelta(hours=options.retention_interval_hours),
            "kwargs": {
                "personal_days": options.retain_personal_days,
                "closed_days": options.retain_closed_days,
            },
        },
    }
    if options.retrain_interval_hours > 0:
        schedule["retrain"] = {"task": RETRAIN_TASK, "schedule": timedelta(hours=options.retrain_interval_hours)}
    return schedule


class CeleryLoggerFilter(logging.Filter):
    """A filter for some of Celery's loggers, installed once on each however many apps a process makes."""

    LOGGERS: tuple[str, ...] = ()

    @classmethod
    def install(cls) -> None:
        for name in cls.LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(each, cls) for each in logger.filters):
                logger.addFilter(cls())


class QuietRoutineTasks(CeleryLoggerFilter):
    """Drops Celery's INFO lines (sent, received, succeeded) for the beat tasks that run every few seconds.

    They were most of a worker's log, about 40 MB a day with nothing to say; the tasks log themselves when
    they do something, and Celery's warnings and errors about them still pass.
    """

    ROUTINE = frozenset({RELAY_OUTBOX_TASK, RETRY_CALLBACKS_TASK})
    LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.app.trace")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or self._task_name(record) not in self.ROUTINE

    @staticmethod
    def _task_name(record: logging.LogRecord) -> object:
        data = getattr(record, "data", None)  # the worker's lines carry their context as extra "data"
        if isinstance(data, dict):
            return data.get("name")
        args = record.args  # beat's "Sending due task %s (%s)": the entry's name, then the task's
        return args[-1] if isinstance(args, tuple) and args else None


class TaskIdsOnCeleryLines(CeleryLoggerFilter):
    """Gives Celery's lines about a task (received, succeeded, failed) the ids it was called with as fields of
    their own, as the service's lines have them: searching a comment's path by ``comment_id`` then finds
    Celery's failure line and traceback too, not only ours.

    Celery puts the call's keyword arguments on those lines as text, the publisher's repr of a few ids.
    """

    LOGGERS = ("celery.worker.strategy", "celery.app.trace")
    LONGEST_REPR = 2_000  # a message published by something else is not parsed at any length
    MOST_DELIVERY_IDS = 100

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            called_with = self._kwargs(data.get("kwargs"))
            # The text is the message's own header, not necessarily its arguments: only row ids are taken,
            # so a hostile one can neither break the JSON line nor name anything else.
            comment_id = called_with.get("comment_id")
            if self._is_row_id(comment_id) and "comment_id" not in record.__dict__:
                record.comment_id = comment_id
            delivery_ids = called_with.get("delivery_ids")
            if (
                isinstance(delivery_ids, list)
                and 0 < len(delivery_ids) <= self.MOST_DELIVERY_IDS
                and all(self._is_row_id(each) for each in delivery_ids)
                and "delivery_ids" not in record.__dict__
            ):
                record.delivery_ids = delivery_ids
        return True

    @staticmethod
    def _is_row_id(value: object) -> bool:
        return type(value) is int and 0 < value < 2**63

    @classmethod
    def _kwargs(cls, text: object) -> dict[str, Any]:
        if not isinstance(text, str) or len(text) > cls.LONGEST_REPR:
            return {}
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return {}
        return value if isinstance(value, dict) else {}


def create_celery(options: CeleryOptions, runtime_factory: Callable[[], Runtime]) -> ModerationCelery:
    QuietRoutineTasks.install()
    TaskIdsOnCeleryLines.install()
    app = ModerationCelery("moderation", set_as_current=True)
    app.config_from_object(celery_config(options))
    app.runtime_factory = runtime_factory
    app.set_default()
    import workers.tasks  # noqa: F401 - registers the shared tasks with this app

    @worker_process_init.connect(weak=False)
    def _fresh_runtime_after_fork(**_: Any) -> None:
        # A forked child must not reuse the parent's pooled database connections.
        app.reset_runtime()

    return app
