"""Which broker queue each task goes to, and what a worker takes: callbacks apart from classify work."""

from __future__ import annotations

from typing import cast

import pytest
import redis
from celery import Celery

from workers.app import (
    CLASSIFY_TASK,
    NOTIFY_TASK,
    PURGE_RECEIPTS_TASK,
    RELAY_OUTBOX_TASK,
    RETENTION_TASK,
    RETRAIN_TASK,
    RETRY_CALLBACKS_TASK,
    CeleryOptions,
    celery_config,
)
from workers.publisher import CeleryPublisher
from workers.queues import CALLBACK_QUEUE, CLASSIFY_QUEUE, TRAINING_QUEUE, WORKER_QUEUES


@pytest.fixture
def app(redis_url: str) -> Celery:
    app = Celery("queues-test", set_as_current=False)
    app.config_from_object(celery_config(CeleryOptions(broker_url=redis_url)))
    return app


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        (CLASSIFY_TASK, CLASSIFY_QUEUE),
        (RELAY_OUTBOX_TASK, CLASSIFY_QUEUE),
        (PURGE_RECEIPTS_TASK, CLASSIFY_QUEUE),
        (RETENTION_TASK, CLASSIFY_QUEUE),
        (RETRAIN_TASK, TRAINING_QUEUE),
        (NOTIFY_TASK, CALLBACK_QUEUE),
        (RETRY_CALLBACKS_TASK, CALLBACK_QUEUE),
    ],
)
def test_each_task_goes_to_its_queue(app: Celery, task: str, queue: str) -> None:
    assert app.amqp.router.route({}, task)["queue"].name == queue


def test_a_worker_started_without_queues_takes_all(app: Celery) -> None:
    assert set(app.amqp.queues.consume_from) == set(WORKER_QUEUES)


def test_each_queue_has_its_own_exchange_and_key(app: Celery) -> None:
    bindings = {(q.exchange.name, q.routing_key) for q in app.amqp.queues.values()}
    assert bindings == {(name, name) for name in WORKER_QUEUES}


def test_each_published_task_lands_in_its_queue_alone(app: Celery, redis_url: str) -> None:
    with app.connection_for_write() as connection:  # as a worker does when it starts: both queues bound
        for queue in app.amqp.queues.values():
            queue.bind(connection.default_channel).declare()
    broker = redis.Redis.from_url(redis_url)
    for name in WORKER_QUEUES:  # each exchange routes to its own queue only
        bound = cast(set[bytes], broker.smembers(f"_kombu.binding.{name}"))
        assert len(bound) == 1 and next(iter(bound)).endswith(name.encode()), bound
    publisher = CeleryPublisher(app)
    publisher.classify(7, revision=0)
    publisher.notify_many([3, 4])
    publisher.classify(8, revision=0)
    classify = cast(list[bytes], broker.lrange(CLASSIFY_QUEUE, 0, -1))
    callbacks = cast(list[bytes], broker.lrange(CALLBACK_QUEUE, 0, -1))
    assert len(classify) == 2 and all(b"moderation.classify" in m for m in classify)
    assert len(callbacks) == 1 and b"moderation.notify" in callbacks[0]
