"""``/metrics`` for Prometheus: counters from every process, plus gauges read from the system's state.

Web's ``/metrics`` reads the metrics folder of its own host only; a worker's main process serves the
counters of its folder on WORKER_METRICS_PORT, so that worker hosts (and worker containers) are scraped too.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
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


WORKER_METRICS_RETRY_SECONDS = 10.0
"""How often a worker whose metrics port is taken tries it again."""


def serve_worker_metrics(
    host: str, port: int, *, retry_every: float = WORKER_METRICS_RETRY_SECONDS
) -> Future[WSGIServer] | None:
    """Serve this host's process counters over HTTP from a thread of the calling (main) process.

    Returns the server's future: done at once, or, while another process holds ``port``, once a daemon thread
    of this process takes the port (it tries every ``retry_every`` seconds). None when ``port`` is 0 or cannot
    be used at all (an address this host does not have: a configuration error, said once and not retried).

    The gauges read from the database and the broker stay with web's /metrics: every worker reporting them
    would only multiply the same numbers. A port that is taken is no reason to stop classifying: in a rolling
    restart the new worker starts while the old one still serves the port, and must take it over when the
    old one stops, or the host's counters go unscraped until the next restart.
    """
    if port == 0:
        return None
    registry = process_counters()
    served: Future[WSGIServer] = Future()
    # Read without a lock by forked pool processes: a Future's lock may be held by the retry thread at fork.
    listening: list[WSGIServer] = []
    try:
        listening.append(start_http_server(port, addr=host, registry=registry)[0])
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            log.warning(
                "worker metrics not served: cannot listen on %s:%d (%s); set WORKER_METRICS_HOST to an address "
                "of this host, or WORKER_METRICS_PORT to 0 for none",
                host,
                port,
                error.strerror or error,
            )
            return None
        log.warning(
            "worker metrics not served yet: cannot listen on %s:%d (%s); trying again every %gs. If another "
            "worker on this host holds that port, its metrics cover this worker too (when both use the same "
            "PROMETHEUS_MULTIPROC_DIR), and this one takes the port over when that one stops; otherwise set "
            "WORKER_METRICS_PORT to a free port, or 0 for none",
            host,
            port,
            error.strerror or error,
            retry_every,
        )
    else:
        served.set_result(listening[0])
        log.info("worker metrics at http://%s:%d/metrics", host, port)

    # Connected here, in the main thread: connecting takes the signal's lock, which a pool process forked
    # meanwhile would inherit held and then wait on for ever when the signal is sent.
    @worker_process_init.connect(weak=False)
    def _pool_processes_leave_the_port_alone(**_: object) -> None:
        # A forked pool process inherits the listening socket; if it outlived a killed main process it
        # would keep the port, and the restarted worker could not serve its metrics. It inherits no
        # threads, so it never retries the port either.
        for server in listening:
            server.socket.close()

    def take_the_port_when_free() -> None:
        while True:
            time.sleep(retry_every)
            try:
                server = start_http_server(port, addr=host, registry=registry)[0]
            except OSError:
                continue  # still taken: the first failure was said, the next ones would only be noise
            listening.append(server)
            log.info("worker metrics now served at http://%s:%d/metrics: the port was freed", host, port)
            served.set_result(server)
            return

    if not served.done():
        threading.Thread(target=take_the_port_when_free, name="worker-metrics-port", daemon=True).start()
    return served
