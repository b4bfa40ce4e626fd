"""``/metrics`` for Prometheus: counters from every process, plus gauges read from the system's state.

Web's ``/metrics`` reads the metrics folder of its own host only; a worker's main process serves the
counters of its folder on WORKER_METRICS_PORT, so that worker hosts (and worker containers) are scraped too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import cast
from wsgiref.simple_server import WSGIServer

from celery.signals import worker_process_init
from flask import Blueprint, Response, current_app
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
    start_http_server,
)
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

log = logging.getLogger(__name__)

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


def process_counters() -> CollectorRegistry:
    """The counters and histograms of every process writing to PROMETHEUS_MULTIPROC_DIR, or of this one."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY  # one process (tests, an app run in-process)
    counters = CollectorRegistry()
    multiprocess.MultiProcessCollector(counters)  # type: ignore[no-untyped-call]  # every process's files
    return counters


@bp.get("/metrics")
def metrics() -> Response:
    counters = process_counters()
    state = CollectorRegistry()
    runtime = current_app.extensions["moderation"]
    state.register(StateCollector(runtime.sessions, current_app.config["SETTINGS"].broker_url))
    return Response(generate_latest(counters) + generate_latest(state), mimetype=CONTENT_TYPE_LATEST)


def serve_worker_metrics(host: str, port: int) -> WSGIServer | None:
    """Serve this host's process counters over HTTP from a thread of the calling (main) process; the server,
    or None when ``port`` is 0 or cannot be bound.

    The gauges read from the database and the broker stay with web's /metrics: every worker reporting them
    would only multiply the same numbers. A port that is taken is no reason to stop classifying: the worker
    goes on and says why its metrics are missing.
    """
    if port == 0:
        return None
    try:
        server, _thread = start_http_server(port, addr=host, registry=process_counters())
    except OSError as error:  # taken, or an address this host does not have
        log.warning(
            "worker metrics not served: cannot listen on %s:%d (%s). If another worker on this host holds that "
            "port, its metrics cover this worker too (when both use the same PROMETHEUS_MULTIPROC_DIR); "
            "otherwise set WORKER_METRICS_PORT to a free port, or 0 for none",
            host,
            port,
            error.strerror or error,
        )
        return None

    @worker_process_init.connect(weak=False)
    def _pool_processes_leave_the_port_alone(**_: object) -> None:
        # A forked pool process inherits the listening socket; if it outlived a killed main process it
        # would keep the port, and the restarted worker could not serve its metrics.
        server.socket.close()

    log.info("worker metrics at http://%s:%d/metrics", host, server.server_port)
    return server
