"""The whole path with real processes: gunicorn web and a Celery worker on real Redis and the database,
and a local HTTP server playing the site that receives the signed callbacks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import Engine, func, select

from models.db import make_session_factory
from models.entities import Comment, Decision
from moderation.sites import create_site
from server.factory import build_celery
from server.settings import Settings
from tests.conftest import TrainedModel
from tests.support.processes import Stack, wait_until
from tests.support.signing import comment_event, encode, sign_from_spec, sign_with_library, signed_headers
from tests.support.site_server import SiteServer
from workers.app import CLASSIFY_TASK
from workers.queues import CALLBACK_QUEUE, CLASSIFY_QUEUE

pytestmark = pytest.mark.slow

COMMENTS = {
    "c-ordinary": ("Thanks for this article, I had no idea massage could help with back pain.", "approved"),
    "c-spam": (
        "Best prices on pain pills, no prescription needed!!! Order now at www.cheap-rx-pharmacy.xyz",
        "rejected",
    ),
    "c-advice": ("That's sciatica, not a muscle. Take 800mg ibuprofen every 6 hours and skip the physio.", "held"),
}


@pytest.fixture
def site_server(engine: Engine) -> Iterator[SiteServer]:
    server = SiteServer().start()
    with make_session_factory(engine).begin() as session:
        _, server.secret = create_site(session, "backpain-advisor", server.url)
    yield server
    server.stop()


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(settings, tmp_path)
    yield stack
    stack.stop_all()


def current_decisions(engine: Engine) -> dict[str, list[str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Comment.external_id, Decision.outcome)
            .join(Decision, Decision.comment_id == Comment.id)
            .where(Decision.is_current)
        ).all()
    found: dict[str, list[str]] = {}
    for external_id, outcome in rows:
        found.setdefault(external_id, []).append(outcome)
    return found


def test_comments_are_decided_and_the_site_is_told(
    stack: Stack, site_server: SiteServer, engine: Engine, active_model: TrainedModel
) -> None:
    _, base = stack.web()
    stack.worker()

    status_urls = {}
    for number, (comment_id, (text, _)) in enumerate(COMMENTS.items()):
        body = encode(comment_event("backpain-advisor", comment_id, body=text))
        signer = sign_with_library if number % 2 else sign_from_spec
        response = httpx.post(
            f"{base}/webhooks/comments", content=body, headers=signed_headers(site_server.secret, body, signer=signer)
        )
        assert response.status_code == 202, response.text
        status_urls[comment_id] = response.json()["status_url"]

    wait_until(lambda: len(site_server.received) >= len(COMMENTS), timeout=90, what="three callbacks")

    assert all(r.verified for r in site_server.received)
    told = {e["data"]["comment_id"]: e["data"] for e in site_server.events()}
    assert {cid: data["status"] for cid, data in told.items()} == {cid: s for cid, (_, s) in COMMENTS.items()}
    assert all(e["type"] == "comment.decided" for e in site_server.events())
    assert told["c-advice"]["reasons"] == ["medical_advice"]
    assert {data["model_version"] for data in told.values()} == {active_model.version}
    assert {cid: len(outcomes) for cid, outcomes in current_decisions(engine).items()} == dict.fromkeys(COMMENTS, 1)

    # The pull API agrees, signed over an empty body.
    answer = httpx.get(status_urls["c-advice"], headers=signed_headers(site_server.secret, b""))
    assert answer.status_code == 200
    assert answer.json()["decision"]["outcome"] == "hold"
    listing = httpx.get(
        f"{base}/api/comments",
        params={"site": "backpain-advisor", "status": "approved"},
        headers=signed_headers(site_server.secret, b""),
    )
    assert [c["comment_id"] for c in listing.json()["comments"]] == ["c-ordinary"]

    # /metrics adds up what the web and the worker processes recorded.
    wait_until(lambda: 'result="delivered"' in httpx.get(f"{base}/metrics").text, timeout=30, what="metrics")
    metrics = httpx.get(f"{base}/metrics").text
    assert 'moderation_intake_requests_total{status="202"} 3.0' in metrics
    decided = [line for line in metrics.splitlines() if line.startswith("moderation_decisions_total{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in decided) == 3.0
    assert f'moderation_active_model{{version="{active_model.version}"}} 1.0' in metrics

    # Secrets never reach the logs, in any form the code handles them.
    key = site_server.secret.removeprefix("whsec_")
    logs = stack.logs(tail=None)
    assert "comment decided" in logs  # the logs were written and read
    assert key not in logs and key[:16] not in logs


def test_callbacks_have_their_own_queue_and_workers_can_take_them_alone(
    stack: Stack, site_server: SiteServer, engine: Engine, active_model: TrainedModel, settings: Settings
) -> None:
    """A backlog of comments to classify does not hold up the sites' callbacks: they wait in a queue of
    their own, which a worker started with `--queues callbacks` takes alone."""
    _, base = stack.web()
    stack.worker(queues=CALLBACK_QUEUE)
    for number, (comment_id, (text, _)) in enumerate(COMMENTS.items()):
        # Three readers: a classify batch takes one comment per author.
        author = {"name": f"Reader {number}", "email": f"reader{number}@example.org", "ip": f"203.0.113.{number}"}
        body = encode(comment_event("backpain-advisor", comment_id, body=text, author=author))
        response = httpx.post(
            f"{base}/webhooks/comments", content=body, headers=signed_headers(site_server.secret, body)
        )
        assert response.status_code == 202, response.text
    broker = redis.Redis.from_url(settings.broker_url)
    assert broker.llen(CLASSIFY_QUEUE) == len(COMMENTS)

    # A classify task run here, as a classify worker would (it decides the comments waiting with it).
    celery = build_celery(settings)
    try:
        first = first_comment_id(engine)
        intake_message = {"comment_id": first, "revision": 0}  # as the web sends it (a relayed one decides alone)
        assert celery.tasks[CLASSIFY_TASK].apply(kwargs=intake_message).get().count(",") == len(COMMENTS) - 1
    finally:
        celery.runtime.sessions.kw["bind"].dispose()

    wait_until(lambda: len(site_server.received) >= len(COMMENTS), timeout=60, what="callbacks from the second queue")
    told = {e["data"]["comment_id"]: e["data"]["status"] for e in site_server.events()}
    assert told == {cid: status for cid, (_, status) in COMMENTS.items()}
    # The callbacks-only worker left the classify messages alone (the batch already decided their comments).
    assert broker.llen(CLASSIFY_QUEUE) == len(COMMENTS)
    assert broker.llen(CALLBACK_QUEUE) == 0


def first_comment_id(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.min(Comment.id))).scalar_one())


def test_outbox_relay_recovers_a_task_the_broker_lost(
    stack: Stack, site_server: SiteServer, engine: Engine, active_model: TrainedModel, redis_url: str
) -> None:
    _, base = stack.web()
    body = encode(comment_event("backpain-advisor", "c-lost", body=COMMENTS["c-ordinary"][0]))
    response = httpx.post(f"{base}/webhooks/comments", content=body, headers=signed_headers(site_server.secret, body))
    assert response.status_code == 202
    redis.Redis.from_url(redis_url).flushdb()  # the broker loses the message

    stack.worker()
    stack.beat()
    wait_until(lambda: len(site_server.received) >= 1, timeout=90, what="the relayed comment's callback")
    assert site_server.events()[0]["data"]["comment_id"] == "c-lost"
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Decision)) == 1
