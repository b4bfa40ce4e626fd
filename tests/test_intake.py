"""The intake contract (DESIGN section 5), status by status, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import Engine, event, func, select

from models.db import make_session_factory
from models.entities import Comment, OutboxMessage, WebhookReceipt
from moderation.sites import require_site, rotate_secret
from server.factory import create_app
from server.settings import Settings
from tests.conftest import SiteCredentials
from tests.support.signing import comment_event, encode, sign_from_spec, sign_with_library, signed_headers


def post(client: FlaskClient, body: bytes, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return client.post("/webhooks/comments", data=body, headers=headers)


def count(engine: Engine, model: type) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.parametrize("signer", [sign_with_library, sign_from_spec], ids=["library", "spec"])
def test_new_comment_is_accepted_stored_and_queued(
    client: FlaskClient, site: SiteCredentials, engine: Engine, redis_url: str, signer: object
) -> None:
    body = encode(comment_event(site.name, "c-1029"))
    response = post(client, body, signed_headers(site.secret, body, signer=signer))

    assert response.status_code == 202
    answer = response.get_json()
    assert answer["status"] == "pending"
    assert answer["status_url"].endswith(f"/api/comments/{answer['id']}?site={site.name}")
    with engine.connect() as connection:
        stored = connection.execute(select(Comment)).one()
        assert stored.external_id == "c-1029" and stored.author_ip == "203.0.113.9"
        assert connection.scalar(select(OutboxMessage.comment_id)) == answer["id"]
    queued = redis.Redis.from_url(redis_url).lrange("moderation", 0, -1)
    assert len(queued) == 1 and b"moderation.classify" in queued[0]


def test_replayed_webhook_id_is_answered_idempotently(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    body = encode(comment_event(site.name, "c-1"))
    headers = signed_headers(site.secret, body)
    first = post(client, body, headers)
    again = post(client, body, headers)

    assert (first.status_code, again.status_code) == (202, 200)
    assert again.get_json()["id"] == first.get_json()["id"]
    assert count(engine, Comment) == 1 and count(engine, OutboxMessage) == 1


def test_a_repeated_delivery_meets_no_database_error(client: FlaskClient, site: SiteCredentials) -> None:
    """The usual repeat (the same webhook again, or the same comment under a new webhook-id) is found
    without a failed statement: nothing for PostgreSQL to log as an ERROR."""
    engine = client.application.extensions["moderation"].sessions.kw["bind"]
    errors: list[BaseException] = []
    event.listen(engine, "handle_error", lambda context: errors.append(context.original_exception))
    body = encode(comment_event(site.name, "c-9"))
    headers = signed_headers(site.secret, body)
    answers = [
        post(client, body, headers),
        post(client, body, headers),
        post(client, body, signed_headers(site.secret, body)),
    ]
    assert [a.status_code for a in answers] == [202, 200, 200]
    assert errors == []


def test_same_site_comment_id_under_a_new_webhook_id_is_a_repeat(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    body = encode(comment_event(site.name, "c-7"))
    first = post(client, body, signed_headers(site.secret, body))
    second = post(client, body, signed_headers(site.secret, body))

    assert (first.status_code, second.status_code) == (202, 200)
    assert second.get_json()["id"] == first.get_json()["id"]
    assert count(engine, Comment) == 1 and count(engine, WebhookReceipt) == 2


@pytest.mark.parametrize(
    ("mutate", "bad_fields"),
    [
        (lambda e: e["data"].pop("body"), {"data.body"}),
        (lambda e: e["data"]["article"].pop("id"), {"data.article.id"}),
        (lambda e: e["data"].update(body="   "), {"data.body"}),
        (lambda e: e["data"].update(comment_id=1029), {"data.comment_id"}),
        (lambda e: e["data"].update(body=12, parent_id=[]), {"data.body", "data.parent_id"}),
        (lambda e: e["data"]["author"].update(ip="not-an-ip"), {"data.author.ip"}),
        (lambda e: e["data"].update(created_at="yesterday"), {"data.created_at"}),
        (lambda e: e["data"].update(body="x" * 20_001), {"data.body"}),
        (lambda e: e["data"].update(body="nul \x00 byte"), {"data.body"}),
        (lambda e: e["data"].update(body="lone \ud800 surrogate"), {"data.body"}),
        (lambda e: e.update(type="comment.liked"), {"type"}),
        (lambda e: e.update(extra="field"), {"extra"}),
        (lambda e: e["data"]["author"].update(shoe_size=9), {"data.author.shoe_size"}),
    ],
    ids=[
        "no-body",
        "no-article-id",
        "blank-body",
        "int-id",
        "two-wrong-types",
        "bad-ip",
        "bad-date",
        "huge-body",
        "nul",
        "surrogate",
        "unknown-type",
        "extra-top",
        "extra-nested",
    ],
)
def test_invalid_fields_are_400_naming_each_field(
    client: FlaskClient, site: SiteCredentials, engine: Engine, mutate: object, bad_fields: set[str]
) -> None:
    event = comment_event(site.name, "c-bad")
    mutate(event)  # type: ignore[operator]
    body = json.dumps(event).encode()
    response = post(client, body, signed_headers(site.secret, body))

    assert response.status_code == 400
    named = {f["field"] for f in response.get_json()["fields"]}
    assert named == bad_fields
    assert count(engine, Comment) == 0


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe\x00 not utf-8", "invalid_json"),
        (b"[1, 2, 3]", "invalid_payload"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
        (json.dumps({"type": "comment.created", "data": {"comment_id": "x"}}).encode(), "invalid_payload"),
    ],
    ids=["bad-json", "bad-utf8", "array", "deep-nesting", "no-site"],
)
def test_malformed_bodies_are_400(
    client: FlaskClient, site: SiteCredentials, engine: Engine, body: bytes, error: str
) -> None:
    # Deep nesting over the size limit would be a 413 first; raise the limit for this one case.
    client.application.config["MAX_CONTENT_LENGTH"] = 1 << 20
    response = post(client, body, signed_headers(site.secret, body, signer=sign_from_spec))
    assert response.status_code == 400
    assert response.get_json()["error"] == error
    assert count(engine, Comment) == 0


def _headers_with(site: SiteCredentials, body: bytes, **changes: str | None) -> dict[str, str]:
    headers = signed_headers(site.secret, body)
    for name, value in changes.items():
        header = name.replace("_", "-")
        if value is None:
            headers.pop(header)
        else:
            headers[header] = value
    return headers


@pytest.mark.parametrize(
    "changes",
    [
        {"webhook_signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},
        {"webhook_signature": "not-a-signature"},
        {"webhook_signature": "v2,abc"},
        {"webhook_signature": "v1,%%%notbase64"},
        {"webhook_signature": None},
        {"webhook_id": None},
        {"webhook_timestamp": None},
        {"webhook_timestamp": "12.5"},
        {"webhook_timestamp": "soon"},
    ],
    ids=[
        "wrong-sig",
        "no-v1-prefix",
        "unknown-version",
        "bad-base64",
        "no-sig",
        "no-id",
        "no-ts",
        "float-ts",
        "word-ts",
    ],
)
def test_bad_signatures_are_401(
    client: FlaskClient, site: SiteCredentials, engine: Engine, changes: dict[str, str | None]
) -> None:
    body = encode(comment_event(site.name, "c-1"))
    response = post(client, body, _headers_with(site, body, **changes))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_signature"
    assert count(engine, Comment) == 0


@pytest.mark.parametrize("skew", [-330, 330], ids=["stale", "future"])
def test_timestamps_outside_five_minutes_are_401(client: FlaskClient, site: SiteCredentials, skew: int) -> None:
    body = encode(comment_event(site.name, "c-1"))
    timestamp = int(datetime.now(UTC).timestamp()) + skew
    response = post(client, body, signed_headers(site.secret, body, timestamp=timestamp))
    assert response.status_code == 401


def test_body_changed_after_signing_is_401(client: FlaskClient, site: SiteCredentials) -> None:
    body = encode(comment_event(site.name, "c-1"))
    headers = signed_headers(site.secret, body)
    response = post(client, body.replace(b"Massage", b"Massive"), headers)
    assert response.status_code == 401


def test_unknown_site_is_401_like_a_bad_signature(client: FlaskClient, site: SiteCredentials) -> None:
    body = encode(comment_event("no-such-site", "c-1"))
    response = post(client, body, signed_headers(site.secret, body))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_signature"


def test_over_64_kib_is_413(client: FlaskClient, site: SiteCredentials, engine: Engine) -> None:
    body = encode(comment_event(site.name, "c-1", body="y" * (65 * 1024)))
    response = post(client, body, signed_headers(site.secret, body))
    assert response.status_code == 413
    assert response.get_json()["error"] == "too_large"
    assert count(engine, Comment) == 0


def test_not_json_is_415(client: FlaskClient, site: SiteCredentials) -> None:
    body = encode(comment_event(site.name, "c-1"))
    headers = {**signed_headers(site.secret, body), "content-type": "text/plain"}
    response = post(client, body, headers)
    assert response.status_code == 415


def test_rate_limit_per_author_ip_is_429_with_retry_after(settings: Settings, site: SiteCredentials) -> None:
    app = create_app(settings.model_copy(update={"rate_limit_per_author_ip": "2/minute"}))
    client = app.test_client()
    answers = []
    for number in range(3):
        body = encode(comment_event(site.name, f"c-{number}"))
        answers.append(post(client, body, signed_headers(site.secret, body)))
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 60
    other_ip = comment_event(site.name, "c-9")
    other_ip["data"]["author"]["ip"] = "198.51.100.7"
    body = encode(other_ip)
    assert post(client, body, signed_headers(site.secret, body)).status_code == 202


def test_database_unreachable_is_503_not_500(settings: Settings, site: SiteCredentials, tmp_path: object) -> None:
    down = settings.model_copy(update={"database_url": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    client = create_app(down).test_client()
    body = encode(comment_event(site.name, "c-1"))
    response = post(client, body, signed_headers(site.secret, body))
    assert response.status_code == 503
    assert response.headers["Retry-After"]


def test_broker_down_still_accepts_into_the_outbox(settings: Settings, site: SiteCredentials, engine: Engine) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    client = create_app(down).test_client()
    body = encode(comment_event(site.name, "c-1"))
    response = post(client, body, signed_headers(site.secret, body))
    assert response.status_code == 202
    assert count(engine, OutboxMessage) == 1


def test_a_repeat_writes_nothing_when_the_one_statement_insert_meets_a_known_delivery(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    """A webhook-id reused for another comment: the receipt fails, so the new comment row must not stay."""
    first = encode(comment_event(site.name, "c-1"))
    headers = signed_headers(site.secret, first, message_id="msg_reused")
    assert post(client, first, headers).status_code == 202
    other = encode(comment_event(site.name, "c-2"))
    again = post(client, other, signed_headers(site.secret, other, message_id="msg_reused"))

    assert again.status_code == 200 and again.get_json()["status"] == "pending"
    with engine.connect() as connection:
        assert connection.scalars(select(Comment.external_id)).all() == ["c-1"]
    assert count(engine, OutboxMessage) == 1 and count(engine, WebhookReceipt) == 1


def test_the_new_comment_rows_are_stored_with_their_values(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    event = comment_event(site.name, "c-42")
    body = encode(event)
    answer = post(client, body, signed_headers(site.secret, body, message_id="msg_42")).get_json()

    with engine.connect() as connection:
        comment = connection.execute(select(Comment)).one()
        receipt = connection.execute(select(WebhookReceipt)).one()
        work = connection.execute(select(OutboxMessage)).one()
    assert comment.id == answer["id"] and comment.status == "pending" and comment.revision == 0
    assert comment.body == event["data"]["body"] and comment.author_email == event["data"]["author"]["email"]
    assert comment.received_at.tzinfo is not None or engine.dialect.name == "sqlite"
    assert (receipt.webhook_id, receipt.comment_id, receipt.received_at) == ("msg_42", comment.id, comment.received_at)
    assert (work.kind, work.comment_id, work.created_at, work.attempts) == (
        "classify",
        comment.id,
        comment.received_at,
        0,
    )
    assert work.published_at is None


def test_a_secret_retired_at_once_stops_verifying_within_the_site_cache_time(
    settings: Settings, site: SiteCredentials, engine: Engine
) -> None:
    client = create_app(settings.model_copy(update={"site_cache_seconds": 0.5})).test_client()
    body = encode(comment_event(site.name, "c-1"))
    assert post(client, body, signed_headers(site.secret, body)).status_code == 202  # the site is cached now
    with make_session_factory(engine).begin() as session:
        new_secret = rotate_secret(session, require_site(session, site.name), timedelta(0))

    body = encode(comment_event(site.name, "c-2"))
    assert post(client, body, signed_headers(new_secret, body)).status_code == 202  # a new secret: read at once
    time.sleep(0.6)
    body = encode(comment_event(site.name, "c-3"))
    assert post(client, body, signed_headers(site.secret, body)).status_code == 401


def test_without_a_site_cache_a_retired_secret_is_refused_at_once(
    settings: Settings, site: SiteCredentials, engine: Engine
) -> None:
    client = create_app(settings.model_copy(update={"site_cache_seconds": 0})).test_client()
    body = encode(comment_event(site.name, "c-1"))
    assert post(client, body, signed_headers(site.secret, body)).status_code == 202
    with make_session_factory(engine).begin() as session:
        rotate_secret(session, require_site(session, site.name), timedelta(0))
    body = encode(comment_event(site.name, "c-2"))
    assert post(client, body, signed_headers(site.secret, body)).status_code == 401
