"""Helpers for the fault tests: sites with their own callback server, posting signed comments, reading the
broker's view of a Celery worker (queued and unacknowledged messages) and PostgreSQL outages."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
from sqlalchemy import Engine, create_engine, func, select, text

from models.db import SQLITE_BEGIN, make_session_factory
from models.entities import CallbackDelivery, Comment, Decision, Site
from moderation.sites import create_site
from tests.support.services import POSTGRES_ADMIN_URL
from tests.support.signing import comment_event, encode, signed_headers
from tests.support.site_server import Answer, Responder, SiteServer, always
from workers.queues import WORKER_QUEUES

TEXTS = [
    "Thanks for this article, I had no idea massage could help with back pain.",
    "Best prices on pain pills, no prescription needed!!! Order now at www.cheap-rx-pharmacy.xyz",
    "That's sciatica, not a muscle. Take 800mg ibuprofen every 6 hours and skip the physio.",
    "My physio suggested gentle stretching and it helped me over a few weeks. Has anyone tried yoga?",
    "Stop taking the gabapentin and don't let them operate, just do these stretches twice a day.",
    "Great post!!! Visit my site for cheap viagra and casino bonuses http://spam.example/win",
]


def comment_text(number: int, long: bool = False) -> str:
    base = f"{TEXTS[number % len(TEXTS)]} (reader {number})"
    if not long:
        return base
    # Long bodies make classification (features, scores and the explanation) slow enough to catch a
    # worker in the middle of a task; varied words keep the duplicate-text signal out of it.
    filler = " ".join(f"I walked {k} minutes on day {number}-{k} and my back felt a bit better." for k in range(220))
    return (base + " " + filler)[:19_000]


@dataclass
class TimedSite(SiteServer):
    """A SiteServer that also records when each callback arrived (monotonic seconds), per webhook-id."""

    arrivals: list[tuple[float, str]] = field(default_factory=list)

    def timed(self, responder: Responder) -> TimedSite:
        def answer(attempt: int) -> Answer:
            with self._lock:
                message_id = self.received[attempt - 1].headers.get("webhook-id", "")
                self.arrivals.append((time.monotonic(), message_id))
            return responder(attempt)

        self.responder = answer
        return self

    def times_of(self, message_id: str) -> list[float]:
        with self._lock:
            return [t for t, m in self.arrivals if m == message_id]


def add_site(engine: Engine, name: str, responder: Responder | None = None) -> TimedSite:
    server = TimedSite().timed(responder or always(204))
    server.start()
    with make_session_factory(engine).begin() as session:
        _, server.secret = create_site(session, name, server.url)
    return server


def post_comment(
    base: str,
    site: str,
    secret: str,
    comment_id: str,
    body: str,
    *,
    number: int = 0,
    webhook_id: str | None = None,
    timestamp: int | None = None,
    timeout: float = 30,
) -> httpx.Response:
    event = comment_event(site, comment_id, body=body)
    # One author IP per comment, so the per-author-IP rate limit never gets in the way.
    event["data"]["author"]["ip"] = f"198.51.{number // 250}.{number % 250 + 1}"
    raw = encode(event)
    headers = signed_headers(secret, raw, message_id=webhook_id, timestamp=timestamp)
    return httpx.post(f"{base}/webhooks/comments", content=raw, headers=headers, timeout=timeout)


@dataclass(frozen=True)
class Delivery:
    request: tuple[bytes, dict[str, str]]

    def send(self, base: str, timeout: float = 30) -> httpx.Response:
        raw, headers = self.request
        return httpx.post(f"{base}/webhooks/comments", content=raw, headers=headers, timeout=timeout)


def prepared(site: str, secret: str, comment_id: str, body: str, number: int = 0) -> Delivery:
    """A signed delivery kept as bytes and headers, so the test can send exactly it again (a site retry)."""
    event = comment_event(site, comment_id, body=body)
    event["data"]["author"]["ip"] = f"198.51.{number // 250}.{number % 250 + 1}"
    raw = encode(event)
    return Delivery((raw, signed_headers(secret, raw)))


def send_concurrently(deliveries: list[Delivery], base: str) -> list[httpx.Response]:
    """Send every delivery at once from its own thread and client (several sites' retries racing)."""
    barrier = threading.Barrier(len(deliveries))
    answers: list[httpx.Response | BaseException] = [RuntimeError("not sent")] * len(deliveries)

    def run(index: int) -> None:
        with httpx.Client(timeout=60) as client:
            raw, headers = deliveries[index].request
            barrier.wait(30)
            try:
                answers[index] = client.post(f"{base}/webhooks/comments", content=raw, headers=headers)
            except BaseException as error:  # reported by the test below
                answers[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(deliveries))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    failures = [a for a in answers if not isinstance(a, httpx.Response)]
    assert not failures, f"concurrent deliveries failed: {failures}"
    return [a for a in answers if isinstance(a, httpx.Response)]


# --- reading the database --------------------------------------------------------------------------


def decided_ids(engine: Engine, comment_ids: list[int]) -> set[int]:
    # A snapshot read: on SQLite it does not wait for a worker's open transaction (see models.db).
    with engine.connect().execution_options(**{SQLITE_BEGIN: "DEFERRED"}) as connection:
        return set(
            connection.scalars(
                select(Decision.comment_id).where(Decision.comment_id.in_(comment_ids), Decision.is_current)
            )
        )


def deliveries_for(engine: Engine, comment_id: int) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(CallbackDelivery).where(CallbackDelivery.comment_id == comment_id)))


def site_row(engine: Engine, name: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(select(Site).where(Site.name == name)).one()


def comment_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(Comment)) or 0)


# --- the broker's view ---------------------------------------------------------------------------


def _classify_comment_id(message: bytes) -> int | None:
    """The comment id of a kombu Redis message holding a classify task (Celery protocol 2)."""
    try:
        envelope = json.loads(message)
        if isinstance(envelope, list):  # unacked entries are [message, exchange, routing_key]
            envelope = envelope[0]
        if envelope.get("headers", {}).get("task") != "moderation.classify":
            return None
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        _args, kwargs, _embed = json.loads(body)
        return int(kwargs["comment_id"])
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def unacked_classify(redis_url: str) -> list[int]:
    """Comment ids of classify tasks a worker has taken but not acknowledged (kombu's ``unacked`` hash)."""
    client = redis.Redis.from_url(redis_url)
    messages: list[bytes] = client.hvals("unacked")  # type: ignore[assignment]
    ids = [_classify_comment_id(m) for m in messages]
    return [i for i in ids if i is not None]


def queued(redis_url: str) -> int:
    """Messages waiting in the broker, in every queue the workers take from."""
    client = redis.Redis.from_url(redis_url)
    lengths: list[int] = [client.llen(queue) for queue in WORKER_QUEUES]  # type: ignore[misc]
    return sum(lengths)


# --- PostgreSQL outages --------------------------------------------------------------------------


def database_name(url: str) -> str:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    assert name
    return name


@contextmanager
def postgres_admin() -> Iterator[Engine]:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        yield admin
    finally:
        admin.dispose()


def refuse_connections(name: str) -> int:
    """ALLOW_CONNECTIONS false, then end every session on the database; the number of sessions ended."""
    with postgres_admin() as admin, admin.connect() as connection:
        connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        ended = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        ).scalar()
        return int(ended or 0)


def allow_connections(name: str) -> None:
    with postgres_admin() as admin, admin.connect() as connection:
        connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
