"""``/metrics`` for Prometheus: counters from every process, plus gauges read from the system's state."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import cast

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models.entities import CallbackDelivery, Comment, CommentStatus, DeliveryStatus, OutboxMessage
from moderation.registry import active_version
from workers.queues import WORKER_QUEUES

bp = Blueprint("metrics", __name__)


class StateCollector(Collector):
    """Queue depth, outbox backlog, held comments, callback states and the active model, at scrape time."""

    def __init__(self, sessions: sessionmaker[Session], broker_url: str) -> None:
        self._sessions = sessions
        self._broker_url = broker_url

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._broker()
        yield from self._database()

    def _broker(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("moderation_queue_depth", "Tasks waiting in a broker queue.", labels=["queue"])
        try:
            client = Redis.from_url(self._broker_url, socket_connect_timeout=0.5, socket_timeout=0.5)
            for queue in WORKER_QUEUES:
                depth.add_metric([queue], float(cast(int, client.llen(queue))))
            client.close()
        except (RedisError, OSError):
            return
        yield depth

    def _database(self) -> Iterator[GaugeMetricFamily]:
        try:
            with self._sessions() as session:
                backlog = session.scalar(select(func.count(OutboxMessage.id))) or 0
                held = session.scalar(select(func.count(Comment.id)).where(Comment.status == CommentStatus.HELD)) or 0
                callbacks = dict(
                    session.execute(
                        select(CallbackDelivery.status, func.count(CallbackDelivery.id)).group_by(
                            CallbackDelivery.status
                        )
                    ).all()
                )
                model = active_version(session)
        except SQLAlchemyError:
            return
        yield GaugeMetricFamily("moderation_outbox_backlog", "Work written but not yet done.", value=backlog)
        yield GaugeMetricFamily("moderation_held_comments", "Comments waiting for a moderator.", value=held)
        states = GaugeMetricFamily("moderation_callbacks", "Callback deliveries by state.", labels=["state"])
        for state in DeliveryStatus:
            states.add_metric([state.value], float(callbacks.get(state.value, 0)))
        yield states
        info = GaugeMetricFamily("moderation_active_model", "The active model version (value 1).", labels=["version"])
        if model is not None:
            info.add_metric([model.version], 1.0)
        yield info


@bp.get("/metrics")
def metrics() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counters = CollectorRegistry()
        multiprocess.MultiProcessCollector(counters)  # type: ignore[no-untyped-call]  # every process's files
    else:
        counters = REGISTRY  # one process (tests, an app run in-process)
    state = CollectorRegistry()
    runtime = current_app.extensions["moderation"]
    state.register(StateCollector(runtime.sessions, current_app.config["SETTINGS"].broker_url))
    return Response(generate_latest(counters) + generate_latest(state), mimetype=CONTENT_TYPE_LATEST)
