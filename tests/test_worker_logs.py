"""What a worker and beat write: only what matters for the housekeeping tasks that run every few seconds, and
the ids a task was called with on Celery's own lines."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from celery import Celery, beat
from celery.app import trace
from celery.worker import strategy

from server.logs import JsonFormatter
from workers.app import (
    CLASSIFY_TASK,
    RELAY_OUTBOX_TASK,
    RETRY_CALLBACKS_TASK,
    QuietRoutineTasks,
    TaskIdsOnCeleryLines,
)


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


@pytest.fixture
def json_lines() -> Iterator[list[str]]:
    """Celery's trace lines as the service writes them (JSON), with the ids filter installed as a worker has it."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(JsonFormatter().format(record))  # type: ignore[method-assign]
    logger = logging.getLogger("celery.app.trace")
    level = logger.level
    filters = {name: list(logging.getLogger(name).filters) for name in TaskIdsOnCeleryLines.LOGGERS}
    TaskIdsOnCeleryLines.install()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)
    for name, before in filters.items():  # as it was for the tests after this one
        logging.getLogger(name).filters[:] = before


def test_celerys_failure_line_names_the_comment_in_a_field_of_its_own(json_lines: list[str]) -> None:
    app = Celery("ids-on-lines", set_as_current=False)

    @app.task(name=CLASSIFY_TASK, shared=False)
    def classify(comment_id: int, revision: int | None = None) -> None:
        raise RuntimeError("the model broke")

    tracer = trace.build_tracer(CLASSIFY_TASK, classify, app=app, eager=False, propagate=False)
    tracer("5e1f", (), {"comment_id": 41, "revision": 2}, {"kwargsrepr": "{'comment_id': 41, 'revision': 2}"})

    failed = [json.loads(line) for line in json_lines if json.loads(line)["level"] == "ERROR"]
    assert len(failed) == 1
    assert failed[0]["comment_id"] == 41 and "RuntimeError: the model broke" in failed[0]["exception"]
    assert "revision" not in failed[0]  # only the ids the service's own lines carry


def test_the_ids_of_a_callback_task_are_a_field_too() -> None:
    record = trace_record({"name": "moderation.notify", "kwargs": "{'delivery_ids': [7, 8]}"})
    assert TaskIdsOnCeleryLines().filter(record) is True
    assert record.__dict__["delivery_ids"] == [7, 8]


def trace_record(data: dict[str, object]) -> logging.LogRecord:
    record = logging.LogRecord("celery.app.trace", logging.ERROR, __file__, 1, "Task failed", None, None)
    record.data = data
    return record


# A message's kwargsrepr header is whatever its publisher wrote, not necessarily its arguments.
@pytest.mark.parametrize(
    "kwargs_text",
    [
        "{'comment_id': ",
        "[41]",
        "{'comment_id': 41, " + "'x': 1, " * 400 + "}",
        "__import__('os')",
        "{'comment_id': {(41,): 1}}",  # a key json.dumps cannot write: the whole line would be lost
        "{'comment_id': 1e999}",  # Infinity: not JSON
        "{'comment_id': '41 OR the admin'}",
        "{'comment_id': True}",
        "{'comment_id': -3}",
        "{'comment_id': " + "9" * 1900 + "}",
        "{'delivery_ids': ['7']}",
        "{'delivery_ids': [" + "7, " * 101 + "]}",
    ],
)
def test_text_that_does_not_name_rows_adds_nothing_and_the_line_is_still_json(kwargs_text: str) -> None:
    record = trace_record({"name": CLASSIFY_TASK, "kwargs": kwargs_text})
    assert TaskIdsOnCeleryLines().filter(record) is True
    assert "comment_id" not in record.__dict__ and "delivery_ids" not in record.__dict__
    json.loads(JsonFormatter().format(record))
