"""The Redis transport keeps one client per channel; every other broker is left to kombu."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from celery import Celery

from workers.app import CLASSIFY_TASK, CeleryOptions, celery_config
from workers.broker import TRANSPORT, Channel, transport_for
from workers.queues import CLASSIFY_QUEUE


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", TRANSPORT),
        ("rediss://user:secret@redis.example:6380/1", None),  # kombu's own, which turns TLS on
        ("amqp://guest:guest@127.0.0.1:5672//", None),
        ("memory://", None),
    ],
)
def test_only_redis_urls_take_this_transport(url: str, expected: str | None) -> None:
    assert transport_for(url) == expected


def test_a_rediss_broker_still_connects_with_tls() -> None:
    app = Celery("broker-tls-test", set_as_current=False)
    app.config_from_object(celery_config(CeleryOptions(broker_url="rediss://user:secret@redis.example:6380/1")))
    connection = app.connection_for_write()  # built, not connected
    assert connection.transport_cls == "rediss" and connection.ssl


@pytest.fixture
def app(redis_url: str) -> Celery:
    app = Celery("broker-test", set_as_current=False)
    app.config_from_object(celery_config(CeleryOptions(broker_url=redis_url)))
    return app


class CountingClient:
    """Wraps the channel's client class, counting the clients it builds."""

    def __init__(self, client_class: Any) -> None:
        self.client_class = client_class
        self.built = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.built += 1
        return self.client_class(*args, **kwargs)


def test_publishing_builds_one_client_per_channel(app: Celery, redis_url: str) -> None:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, Channel)
        counting = CountingClient(channel.Client)
        channel.Client = counting
        producer = app.amqp.Producer(channel)
        for comment_id in range(5):
            app.send_task(CLASSIFY_TASK, kwargs={"comment_id": comment_id}, producer=producer)
        assert counting.built == 1  # kombu's own channel builds one per publish: 5
    assert redis.Redis.from_url(redis_url).llen(CLASSIFY_QUEUE) == 5


def test_a_channel_with_a_new_pool_gets_a_new_client(app: Celery) -> None:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        channel._pool = None  # as kombu does when it closes the channel's connections
        assert channel._create_client() is not first


def test_the_polling_client_stays_kombus_own(app: Celery) -> None:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert channel._create_client(asynchronous=True) is not channel._create_client()
