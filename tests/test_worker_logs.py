"""What a worker and beat write for the housekeeping tasks that run every few seconds: only what matters."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from celery import beat
from celery.app import trace
from celery.worker import strategy

from workers.app import CLASSIFY_TASK, RELAY_OUTBOX_TASK, RETRY_CALLBACKS_TASK, QuietRoutineTasks


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def kept() -> Iterator[Kept]:
    QuietRoutineTasks.install()
    QuietRoutineTasks.install()  # twice, as two apps in one process would: one filter each
    handler = Kept()
    loggers = [logging.getLogger(name) for name in QuietRoutineTasks.LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        assert sum(isinstance(each, QuietRoutineTasks) for each in logger.filters) == 1
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def context(name: str) -> dict[str, object]:
    return {"id": "9f2c", "name": name, "args": "()", "kwargs": "{}", "eta": None, "runtime": 0.01, "return_value": 0}


def test_routine_tasks_leave_no_info_lines_and_classify_still_does(kept: Kept) -> None:
    for name in (RELAY_OUTBOX_TASK, RETRY_CALLBACKS_TASK, CLASSIFY_TASK):
        strategy.logger.info(trace.LOG_RECEIVED, context(name), extra={"data": context(name)})
        trace.info(trace.LOG_SUCCESS, context(name))
    beat.info("Scheduler: Sending due task %s (%s)", "relay-outbox", RELAY_OUTBOX_TASK)
    beat.info("Scheduler: Sending due task %s (%s)", "purge-webhook-receipts", "moderation.purge_receipts")

    assert kept.lines == [
        f"Task {CLASSIFY_TASK}[9f2c] received",
        f"Task {CLASSIFY_TASK}[9f2c] succeeded in 0.01s: 0",
        "Scheduler: Sending due task purge-webhook-receipts (moderation.purge_receipts)",
    ]


def test_a_routine_task_that_fails_is_still_logged(kept: Kept) -> None:
    logging.getLogger("celery.app.trace").error(
        "Task %(name)s[%(id)s] raised unexpected: %(exc)s", {**context(RELAY_OUTBOX_TASK), "exc": "OperationalError"}
    )
    assert kept.lines == [f"Task {RELAY_OUTBOX_TASK}[9f2c] raised unexpected: OperationalError"]
