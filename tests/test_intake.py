"""The intake contract (DESIGN section 5), status by status, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, event, func, select, update

from models.db import make_session_factory
from models.entities import Comment, OutboxMessage, WebhookReceipt
from moderation import intake, lifecycle
from moderation.sites import SiteKeyCache, create_site, require_site, rotate_secret
from server.factory import create_app
from server.settings import Settings
from tests.conftest import SiteCredentials
from tests.support.signing import (
    comment_event,
    encode,
    sign_from_spec,
    sign_with_library,
    signed_headers,
    without_server_time,
)
from tests.support.site_reads import frozen_cache_clock, site_reads

# One event of each type for comment "c-1" of a site: what holds for every kind of webhook.
EVERY_EVENT: list[Callable[[str], dict[str, Any]]] = [
    lambda s: comment_event(s, "c-1"),
    lambda s: updated_event(s, "c-1", "Edited text."),
    lambda s: deleted_event(s, "c-1"),
]


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
    queued = cast(list[bytes], redis.Redis.from_url(redis_url).lrange("moderation", 0, -1))
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
    "value",
    [1700000000, 1700000000.5, "1700000000", "1700000000000", 0, "2023-11-14"],
    ids=["seconds", "float", "digits", "milliseconds", "zero", "date-only"],
)
@pytest.mark.parametrize(
    ("event_type", "field"),
    [("comment.created", "created_at"), ("comment.updated", "updated_at"), ("comment.deleted", "deleted_at")],
)
def test_a_site_time_is_an_iso_date_time_string_never_a_count_of_seconds(
    client: FlaskClient, site: SiteCredentials, engine: Engine, event_type: str, field: str, value: Any
) -> None:
    """As the OpenAPI document says (date-time): pydantic's lax parsing took 1700000000, "1700000000" and even
    milliseconds as times in 2023, and 0 as 1970, so a site sending the wrong unit had its edits ordered wrong."""
    event = comment_event(site.name, "c-1")
    if event_type == "comment.updated":
        event["data"]["updated_at"] = "2026-11-26T10:05:00Z"
    elif event_type == "comment.deleted":
        event["data"] = {"comment_id": "c-1", "site": site.name, "deleted_at": "2026-11-26T10:05:00Z"}
    event["type"] = event_type
    event["data"][field] = value
    response = send(client, site, event)
    assert response.status_code == 400
    fields = response.get_json()["fields"]
    assert [f["field"] for f in fields] == [f"data.{field}"]
    assert fields[0]["message"] == "must be an ISO 8601 date-time string"
    assert count(engine, Comment) == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("body", "", "must not be empty"),
        ("body", "x" * 20_001, "must be at most 20000 characters"),
        ("body", "   ", "must not be blank"),
        ("body", " \u200b\u2060\u00ad ", "must not be blank"),  # drawn as nothing: readers would see no comment
        ("comment_id", "", "must not be empty"),
        ("comment_id", "c" * 201, "must be at most 200 characters"),
        ("article", {"id": "a", "title": "t" * 501}, "must be at most 500 characters"),
        ("author", {"ip": "not-an-ip"}, "must be an IPv4 or IPv6 address"),
    ],
    ids=["empty-body", "long-body", "blank-body", "invisible-body", "empty-id", "long-id", "long-title", "bad-ip"],
)
def test_field_messages_read_as_plain_rules(
    client: FlaskClient, site: SiteCredentials, field: str, value: Any, message: str
) -> None:
    """Not pydantic's "Value should have at least 1 item after validation" for a string."""
    event = comment_event(site.name, "c-1")
    event["data"][field] = value
    body = encode(event)
    response = post(client, body, signed_headers(site.secret, body))

    assert response.status_code == 400
    nested = {"article": "data.article.title", "author": "data.author.ip"}
    assert response.get_json()["fields"] == [{"field": nested.get(field, f"data.{field}"), "message": message}]


@pytest.mark.parametrize(
    ("event_type", "message"),
    [
        (None, "required: one of comment.created, comment.updated, comment.deleted"),
        ("comment.liked", "must be one of comment.created, comment.updated, comment.deleted"),
        (5, "must be one of comment.created, comment.updated, comment.deleted"),
    ],
    ids=["missing", "unknown", "not-text"],
)
def test_a_missing_or_unknown_event_type_is_answered_with_the_types_there_are(
    client: FlaskClient, site: SiteCredentials, event_type: Any, message: str
) -> None:
    """Not pydantic's "Unable to extract tag using discriminator 'type'", nor the input echoed back."""
    event = comment_event(site.name, "c-1")
    if event_type is None:
        del event["type"]
    else:
        event["type"] = event_type
    body = encode(event)
    response = post(client, body, signed_headers(site.secret, body))

    assert response.status_code == 400
    assert response.get_json()["fields"] == [{"field": "type", "message": message}]


def test_the_erasure_api_words_its_length_rules_the_same_way(client: FlaskClient, site: SiteCredentials) -> None:
    body = json.dumps({"email": "a@"}).encode()
    response = client.post(f"/api/authors/erase?site={site.name}", data=body, headers=signed_headers(site.secret, body))
    assert response.status_code == 400
    assert response.get_json()["fields"] == [{"field": "email", "message": "must be at least 3 characters"}]


@pytest.mark.parametrize("make", EVERY_EVENT, ids=["created", "updated", "deleted"])
def test_an_envelope_timestamp_is_accepted_and_ignored(
    client: FlaskClient, site: SiteCredentials, engine: Engine, make: Callable[[str], dict[str, Any]]
) -> None:
    """Standard Webhooks' payload format is {type, timestamp, data}; the service's own callbacks carry it."""
    event = {"timestamp": "2026-11-26T10:00:01.344522Z", **make(site.name)}
    first = send(client, site, event, "msg_stamped")
    before = stored_state(engine)
    # A sender stamping each attempt anew still sends the same message.
    retry = send(client, site, {**event, "timestamp": "2026-11-26T10:05:00+01:00"}, "msg_stamped")

    assert first.status_code in (200, 202), first.get_json()
    assert (retry.status_code, retry.get_json()["id"]) == (200, first.get_json()["id"])
    assert stored_state(engine) == before
    schema = client.get("/openapi.json").get_json()["components"]["schemas"]
    for name in ("CommentCreated", "CommentUpdated", "CommentDeleted"):
        assert {"type": "string", "format": "date-time"} in schema[name]["properties"]["timestamp"]["anyOf"]
        assert "timestamp" not in schema[name].get("required", [])


@pytest.mark.parametrize(
    "timestamp",
    ["yesterday", "2026-11-26T10:00:01", 1764151201, "1764151201", "", ["2026-11-26T10:00:01Z"]],
    ids=["word", "no-zone", "number", "digits", "empty", "list"],
)
def test_a_malformed_envelope_timestamp_is_400_naming_it(
    client: FlaskClient, site: SiteCredentials, engine: Engine, timestamp: Any
) -> None:
    response = send(client, site, {**comment_event(site.name, "c-1"), "timestamp": timestamp})
    assert response.status_code == 400
    assert [f["field"] for f in response.get_json()["fields"]] == ["timestamp"]
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


@pytest.mark.parametrize(
    ("document", "field", "message"),
    [
        ({"type": "comment.created", "data": "hi"}, "data", "must be an object"),
        ({"type": "comment.created", "data": []}, "data", "must be an object"),
        ({"type": "comment.created"}, "data", "is required"),
        ({"type": "comment.created", "data": {"comment_id": "x"}}, "data.site", "a site name is required"),
    ],
)
def test_a_payload_without_a_data_object_is_told_so_not_that_it_names_no_site(
    client: FlaskClient, site: SiteCredentials, document: dict[str, Any], field: str, message: str
) -> None:
    """A tester's finding: "data": "hi" was answered "the payload must name its site" (data.site)."""
    body = json.dumps(document).encode()
    response = post(client, body, signed_headers(site.secret, body))
    assert response.status_code == 400
    assert response.get_json()["fields"] == [{"field": field, "message": message}]


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


# A webhook-id is text a site chose; one that is not (over 200 characters, or with control characters: a NUL
# PostgreSQL cannot store, a line break that forges a log line) is refused before anything is stored or logged.
BAD_WEBHOOK_IDS = {
    "too-long": ("msg_" + "x" * 197, "webhook-id is longer than 200 characters"),
    "nul": ("msg_\x00nul", "webhook-id must not hold control characters"),
    "escape": ("msg_\x1b[31mred", "webhook-id must not hold control characters"),
    "tab": ("msg\tone", "webhook-id must not hold control characters"),
    "del": ("msg_\x7f", "webhook-id must not hold control characters"),
    "c1-next-line": ("msg_\x85", "webhook-id must not hold control characters"),
}


@pytest.mark.parametrize(("webhook_id", "words"), BAD_WEBHOOK_IDS.values(), ids=BAD_WEBHOOK_IDS.keys())
def test_a_webhook_id_too_long_or_with_control_characters_is_401_naming_the_rule_not_the_id(
    client: FlaskClient, site: SiteCredentials, engine: Engine, webhook_id: str, words: str
) -> None:
    body = encode(comment_event(site.name, "c-1"))
    response = post(client, body, signed_headers(site.secret, body, message_id=webhook_id))
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_signature"
    assert response.get_json()["message"] == f"the signature does not verify for the site named in the payload: {words}"
    assert count(engine, Comment) == 0


def test_a_nul_in_webhook_id_is_a_401_and_nothing_of_the_comment_is_logged(
    app: Flask, client: FlaskClient, site: SiteCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    """A NUL PostgreSQL cannot store reached the database: an unhandled DataError, Flask's 500, logged with
    the statement's parameters (the comment's text, its author's e-mail and IP)."""
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production: an unhandled error is Flask's logged 500
    private_text, email = "Take 800mg ibuprofen three times a day, my private diagnosis", "private.person@example.org"
    event = comment_event(site.name, "c-nul", body=private_text)
    event["data"]["author"]["email"] = email
    body = encode(event)
    with caplog.at_level(logging.INFO):
        response = post(client, body, signed_headers(site.secret, body, message_id="msg_\x00nul"))
    logged = "\n".join(
        record.getMessage() + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        for record in caplog.records
    )
    assert private_text not in logged and email not in logged
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_signature"


@pytest.mark.parametrize(
    ("skew", "words"),
    [(-330, "old: more than 5 minutes behind"), (330, "new: more than 5 minutes ahead of")],
    ids=["stale", "future"],
)
def test_timestamps_outside_five_minutes_are_401_saying_how_the_clock_is_off(
    client: FlaskClient, site: SiteCredentials, skew: int, words: str
) -> None:
    """The signature is right: the answer blames the timestamp, says which way, and what the clock reads."""
    body = encode(comment_event(site.name, "c-1"))
    before = int(time.time())
    response = post(client, body, signed_headers(site.secret, body, timestamp=before + skew))
    after = int(time.time())

    assert response.status_code == 401 and response.get_json()["error"] == "invalid_signature"
    message, server_time = without_server_time(response.get_json()["message"])
    assert message == (
        f"webhook-timestamp is too {words} the server's clock; webhook-timestamp must be the current unix time in "
        "seconds"
    )
    assert server_time is not None and before <= server_time <= after


def test_body_changed_after_signing_is_401(client: FlaskClient, site: SiteCredentials) -> None:
    body = encode(comment_event(site.name, "c-1"))
    headers = signed_headers(site.secret, body)
    response = post(client, body.replace(b"Massage", b"Massive"), headers)
    assert response.status_code == 401


@pytest.mark.parametrize("age", [0, 3600, -3600], ids=["fresh", "stale", "future"])
def test_unknown_site_is_401_like_a_bad_signature(client: FlaskClient, site: SiteCredentials, age: int) -> None:
    """Word for word: which site names exist must not show in the answers of unsigned requests.

    But for the server's clock reading, which may tick between the two requests.
    """
    wrong_secret = "whsec_" + "A" * 44
    when = int(time.time()) - age
    answers, readings = [], []
    for name in (site.name, "no-such-site"):
        body = encode(comment_event(name, "c-1"))
        response = post(client, body, signed_headers(wrong_secret, body, message_id="msg_1", timestamp=when))
        message, server_time = without_server_time(response.get_json()["message"])
        answers.append((response.status_code, {**response.get_json(), "message": message}))
        readings.append(server_time)
    assert answers[0] == answers[1]
    assert answers[0][0] == 401 and answers[0][1]["error"] == "invalid_signature"
    assert ("too old" in answers[0][1]["message"]) == (age > 0)
    # Both answers give the clock's reading when the timestamp is off it (either way), neither when it is not.
    assert [reading is not None for reading in readings] == [age != 0] * 2


def test_over_max_body_bytes_is_413(client: FlaskClient, site: SiteCredentials, engine: Engine) -> None:
    body = encode(comment_event(site.name, "c-1", body="y" * client.application.config["MAX_CONTENT_LENGTH"]))
    response = post(client, body, signed_headers(site.secret, body))
    assert response.status_code == 413
    assert response.get_json()["error"] == "too_large"
    assert count(engine, Comment) == 0


def test_the_longest_comment_in_any_script_fits_the_size_limit(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    """20,000 characters, as the schema allows, sent as json.dumps writes them (each emoji as two \\u escapes)."""
    emoji = "\N{GRINNING FACE}"
    event = comment_event(site.name, "c-1", body=emoji * 20_000)
    event["data"]["article"]["title"] = emoji * 500
    event["data"]["author"] |= {"name": emoji * 200, "user_agent": emoji * 1000}
    body = encode(event)
    assert len(body) > 64 * 1024  # the old limit refused it
    response = post(client, body, signed_headers(site.secret, body))
    assert response.status_code == 202, response.get_json()
    with make_session_factory(engine)() as session:
        assert session.scalars(select(Comment.body)).one() == emoji * 20_000


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


def test_the_author_ip_limit_counts_one_address_however_it_is_spelt_and_an_ipv6_64_as_one(
    settings: Settings, site: SiteCredentials, engine: Engine
) -> None:
    """A security review sent 40 comments from 40 addresses of one /64, and one address written four ways:
    each was a new author to the limit. Addresses are stored in one spelling too, for the author's history."""
    app = create_app(settings.model_copy(update={"rate_limit_per_author_ip": "3/minute"}))
    client = app.test_client()
    spellings = ["2001:db8:1:2::5", "2001:DB8:1:2:0:0:0:5", "2001:0db8:1:2::5", "2001:db8:1:2::6"]
    answers = []
    for number, address in enumerate(spellings):
        event = comment_event(site.name, f"c-{number}")
        event["data"]["author"]["ip"] = address
        body = encode(event)
        answers.append(post(client, body, signed_headers(site.secret, body)).status_code)
    assert answers == [202, 202, 202, 429]
    mapped = comment_event(site.name, "c-mapped")
    mapped["data"]["author"]["ip"] = "::ffff:198.51.100.9"
    body = encode(mapped)
    assert post(client, body, signed_headers(site.secret, body)).status_code == 202
    with make_session_factory(engine)() as session:
        stored = {
            row.external_id: row.author_ip for row in session.execute(select(Comment.external_id, Comment.author_ip))
        }
    assert stored == {
        "c-0": "2001:db8:1:2::5",
        "c-1": "2001:db8:1:2::5",
        "c-2": "2001:db8:1:2::5",
        "c-mapped": "198.51.100.9",
    }
    with make_session_factory(engine)() as session:  # what the author checks match: an IPv6 /64, an IPv4 address
        networks = set(session.scalars(select(Comment.author_network)))
    assert networks == {"2001:db8:1:2::/64", "198.51.100.9"}
    zoned = comment_event(site.name, "c-zoned")
    zoned["data"]["author"]["ip"] = "fe80::1%eth0"
    body = encode(zoned)
    refused = post(client, body, signed_headers(site.secret, body))
    assert refused.status_code == 400 and "without a zone" in refused.get_data(as_text=True)


@pytest.mark.parametrize("limit", ["rate_limit_per_author_ip", "rate_limit_per_site"])
def test_a_repeat_of_an_accepted_delivery_is_answered_as_one_when_over_the_limit(
    settings: Settings, site: SiteCredentials, engine: Engine, limit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site that keeps retrying a delivery it saw no answer to learns it was stored, not to wait and retry."""
    looked_up: list[str] = []  # the look-up for a repeat: only once a limit refuses, never on the hot path

    def repeated_delivery(*args: Any, **kwargs: Any) -> Any:
        looked_up.append(args[2])
        return intake.repeated_delivery(*args, **kwargs)

    monkeypatch.setattr("webhooks.intake.repeated_delivery", repeated_delivery, raising=False)
    app = create_app(settings.model_copy(update={limit: "2/minute"}))
    try:
        client = app.test_client()
        created = encode(comment_event(site.name, "c-1"))
        deleted = encode(deleted_event(site.name, "c-0"))  # no author ip: only the site's limit counts it
        first_headers = signed_headers(site.secret, created)
        first = post(client, created, first_headers)
        assert first.status_code == 202
        deletion = post(client, deleted, signed_headers(site.secret, deleted))  # now at the limit
        assert deletion.status_code == 200, deletion.get_json()
        assert looked_up == []

        for _ in range(3):  # each over the limit, each answered as the repeat it is
            again = post(client, created, first_headers)
            assert again.status_code == 200, again.get_json()
            assert again.get_json() == first.get_json()
        # A retry signed again (new timestamp and signature, same id and JSON) is the same delivery.
        resigned = post(client, created, signed_headers(site.secret, created, message_id=first_headers["webhook-id"]))
        assert resigned.status_code == 200 and resigned.get_json()["id"] == first.get_json()["id"]

        # What is not a repeat of an accepted delivery is limited as before: a new comment, the same comment
        # under a new webhook-id, and another payload under the accepted id.
        other = encode(comment_event(site.name, "c-2"))
        reused = signed_headers(site.secret, other, message_id=first_headers["webhook-id"])
        for body, headers in [
            (other, signed_headers(site.secret, other)),
            (created, signed_headers(site.secret, created)),
            (other, reused),
        ]:
            limited = post(client, body, headers)
            assert limited.status_code == 429, limited.get_json()
            assert limited.get_json()["error"] == "rate_limited" and "Retry-After" in limited.headers
        assert count(engine, Comment) == 2 and count(engine, OutboxMessage) == 1
        assert first_headers["webhook-id"] in looked_up
    finally:
        app.extensions["moderation"].sessions.kw["bind"].dispose()


def test_database_unreachable_is_503_not_500(settings: Settings, site: SiteCredentials, tmp_path: object) -> None:
    down = settings.model_copy(update={"database_url": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    client = create_app(down).test_client()
    body = encode(comment_event(site.name, "c-1"))
    response = post(client, body, signed_headers(site.secret, body))
    assert response.status_code == 503
    assert response.headers["Retry-After"]


def test_broker_down_still_accepts_into_the_outbox(
    settings: Settings, site: SiteCredentials, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    client = create_app(down).test_client()
    body = encode(comment_event(site.name, "c-1"))
    with caplog.at_level(logging.INFO, logger="webhooks.intake"):
        response = post(client, body, signed_headers(site.secret, body))
    assert response.status_code == 202
    assert count(engine, OutboxMessage) == 1
    [accepted] = [r for r in caplog.records if r.getMessage() == "comment accepted"]
    assert (accepted.__dict__["queued"], accepted.__dict__["published"]) == (True, False)


def test_an_id_reused_for_another_comment_writes_nothing_when_the_one_statement_insert_meets_it(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    """A webhook-id reused for another comment: the receipt fails, so the new comment row must not stay."""
    first = encode(comment_event(site.name, "c-1"))
    headers = signed_headers(site.secret, first, message_id="msg_reused")
    assert post(client, first, headers).status_code == 202
    other = encode(comment_event(site.name, "c-2"))
    again = post(client, other, signed_headers(site.secret, other, message_id="msg_reused"))

    assert again.status_code == 409 and again.get_json()["error"] == "webhook_id_reused"
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
    canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    assert receipt.payload_sha256 == hashlib.sha256(canonical.encode()).hexdigest()
    assert (work.kind, work.comment_id, work.created_at, work.attempts) == (
        "classify",
        comment.id,
        comment.received_at,
        0,
    )
    assert work.published_at is None


def test_a_new_comment_is_stored_with_its_fields_as_readers_see_them_for_the_dashboards_search(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    """Without the characters drawn as nothing, compatibility forms folded and case folded (the search reads
    these columns); on PostgreSQL through the one-statement insert, on SQLite through the ORM."""
    author = {"name": "Jo\u200bhn \u200eMÜLLER", "email": "John@Straße.example", "url": None, "ip": "203.0.113.9"}
    article = {"id": "Rücken-\u00adSchmerz", "url": "https://example.org/r", "title": "ＥＣＯＬＥ du dos\ufe0f"}
    event = comment_event(site.name, "c-43", body="V\u200bIAGRA for the Stra\u00dfe \U000e0041crowd", author=author)
    event["data"]["article"] = article
    body = encode(event)
    assert post(client, body, signed_headers(site.secret, body)).status_code == 202

    with engine.connect() as connection:
        stored = connection.execute(select(Comment.search_text, Comment.search_author, Comment.search_article)).one()
    assert tuple(stored) == (
        "viagra for the strasse crowd",
        "john müller\u2063john@strasse.example\u2063",
        "rücken-schmerz\u2063ecole du dos",
    )


def test_a_secret_retired_at_once_stops_verifying_within_the_site_cache_time(
    settings: Settings, site: SiteCredentials, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = frozen_cache_clock(monkeypatch)
    client = create_app(settings).test_client()
    body = encode(comment_event(site.name, "c-1"))
    assert post(client, body, signed_headers(site.secret, body)).status_code == 202  # the site is cached now
    with make_session_factory(engine).begin() as session:
        rotate_secret(session, require_site(session, site.name), timedelta(0))

    body = encode(comment_event(site.name, "c-2"))
    assert post(client, body, signed_headers(site.secret, body)).status_code == 202  # as the cache read it
    clock.advance(settings.site_cache_seconds)
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


# --- refused requests cost no database read each: anyone can send them, before any rate limit -----------

WRONG_SECRET = "whsec_" + "A" * 44


def answers(client: FlaskClient, site_name: str, secret: str, count: int, first: int = 0) -> list[int]:
    """The status codes of ``count`` new comments for ``site_name``, signed with ``secret``."""
    codes = []
    for n in range(first, first + count):
        body = encode(comment_event(site_name, f"c-{n}"))
        codes.append(post(client, body, signed_headers(secret, body)).status_code)
    return codes


def test_requests_with_a_bad_signature_read_the_site_at_most_once_per_interval(
    app: Flask, site: SiteCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = frozen_cache_clock(monkeypatch)
    client = app.test_client()
    with site_reads(app) as reads:
        assert answers(client, site.name, WRONG_SECRET, 20) == [401] * 20
    assert len(reads) <= 2  # the first lookup of the name; every refusal after it is answered from memory

    clock.advance(SiteKeyCache.REREAD_SECONDS)
    with site_reads(app) as reads:
        assert answers(client, site.name, WRONG_SECRET, 20) == [401] * 20
    assert len(reads) == 1  # read again once: a secret made in the meantime would verify


def test_requests_naming_sites_that_do_not_exist_read_the_database_at_most_once_per_interval(
    app: Flask, site: SiteCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same unknown name again and again; or a new one each time, as a stranger making names up would."""
    frozen_cache_clock(monkeypatch)
    monkeypatch.setattr(SiteKeyCache, "MAX_UNKNOWN_NAMES", 5)
    client = app.test_client()
    with site_reads(app) as reads:
        assert answers(client, "no-such-site", WRONG_SECRET, 20) == [401] * 20
    assert len(reads) == 1

    with site_reads(app) as reads:
        made_up = [answers(client, f"no-such-site-{n}", WRONG_SECRET, 1)[0] for n in range(40)]
    assert made_up == [401] * 40
    assert len(reads) <= SiteKeyCache.MAX_UNKNOWN_NAMES  # 4 names more remembered, then every site's name once
    assert answers(client, site.name, site.secret, 1) == [202]  # a real site is found all the same


def test_a_secret_made_in_another_process_verifies_once_the_reread_interval_has_passed(
    app: Flask, site: SiteCredentials, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst case: the site's keys were read again just before the rotation (a stranger's bad request
    did it), so the site's first request with its new secret is refused, and its retry is accepted."""
    clock = frozen_cache_clock(monkeypatch)
    client = app.test_client()
    assert answers(client, site.name, site.secret, 1) == [202]  # cached now
    clock.advance(SiteKeyCache.REREAD_SECONDS)
    assert answers(client, site.name, WRONG_SECRET, 1, first=1) == [401]  # the keys are read again now
    with make_session_factory(engine).begin() as session:
        new_secret = rotate_secret(session, require_site(session, site.name), timedelta(hours=24))

    body = encode(comment_event(site.name, "c-2"))
    headers = signed_headers(new_secret, body)
    assert post(client, body, headers).status_code == 401
    clock.advance(SiteKeyCache.REREAD_SECONDS)
    assert post(client, body, headers).status_code == 202  # the site's retry
    assert answers(client, site.name, site.secret, 1, first=3) == [202]  # the old secret, within its overlap


@pytest.mark.parametrize("made_up_names", [0, 10], ids=["quiet", "names-made-up"])
def test_a_site_added_in_another_process_is_found_once_the_site_cache_time_has_passed(
    app: Flask, settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch, made_up_names: int
) -> None:
    """Whether its name was remembered as absent, or a stranger making up names had every site's name read."""
    clock = frozen_cache_clock(monkeypatch)
    monkeypatch.setattr(SiteKeyCache, "MAX_UNKNOWN_NAMES", 5)
    client = app.test_client()
    assert answers(client, "new-site", WRONG_SECRET, 1) == [401]  # no such site yet
    assert [answers(client, f"made-up-{n}", WRONG_SECRET, 1)[0] for n in range(made_up_names)] == [401] * made_up_names
    with make_session_factory(engine).begin() as session:
        _, secret = create_site(session, "new-site")
        _, other_secret = create_site(session, "other-new-site")

    assert answers(client, "new-site", secret, 1, first=1) == [401]  # this process looked a moment ago
    # A name never asked for is looked up at once, unless names are being made up.
    assert answers(client, "other-new-site", other_secret, 1) == [401 if made_up_names else 202]
    clock.advance(settings.site_cache_seconds)
    assert answers(client, "new-site", secret, 1, first=2) == [202]
    assert answers(client, "other-new-site", other_secret, 1, first=1) == [202]


def test_without_a_site_cache_every_request_reads_the_site_once(
    settings: Settings, site: SiteCredentials, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SITE_CACHE_SECONDS=0``: a site added is found at once, and a refusal costs no second read."""
    frozen_cache_clock(monkeypatch)
    app = create_app(settings.model_copy(update={"site_cache_seconds": 0}))
    client = app.test_client()
    assert answers(client, "new-site", WRONG_SECRET, 1) == [401]
    with make_session_factory(engine).begin() as session:
        _, secret = create_site(session, "new-site")
    assert answers(client, "new-site", secret, 1, first=1) == [202]
    with site_reads(app) as reads:
        assert answers(client, site.name, WRONG_SECRET, 5) == [401] * 5
        assert answers(client, "no-such-site", WRONG_SECRET, 5) == [401] * 5
    assert len(reads) == 10


# --- a webhook-id names one message: reused for another payload it is refused ----------------------------

UPDATED_AT, LATER = "2026-11-26T11:00:00Z", "2026-11-26T11:30:00Z"


def updated_event(site: str, comment_id: str, body: str, updated_at: str = UPDATED_AT) -> dict[str, Any]:
    event = comment_event(site, comment_id, body=body, updated_at=updated_at)
    event["type"] = "comment.updated"
    return event


def deleted_event(site: str, comment_id: str, deleted_at: str = "2026-11-26T12:00:00Z") -> dict[str, Any]:
    return {"type": "comment.deleted", "data": {"comment_id": comment_id, "site": site, "deleted_at": deleted_at}}


def send(client: FlaskClient, site: SiteCredentials, event: dict[str, Any], webhook_id: str | None = None) -> Any:
    body = encode(event)
    return post(client, body, signed_headers(site.secret, body, message_id=webhook_id))


def stored_state(engine: Engine) -> tuple[Sequence[Any], Sequence[Any], int]:
    """Every comment's visible state, every receipt and the outbox size: what a refused delivery must not touch."""
    with engine.connect() as connection:
        comments = connection.execute(
            select(
                Comment.id, Comment.external_id, Comment.status, Comment.body, Comment.revision, Comment.deleted_at
            ).order_by(Comment.id)
        ).all()
        receipts = connection.execute(
            select(WebhookReceipt.webhook_id, WebhookReceipt.comment_id, WebhookReceipt.payload_sha256).order_by(
                WebhookReceipt.id
            )
        ).all()
    return comments, receipts, count(engine, OutboxMessage)


@pytest.mark.parametrize(
    ("change", "edited", "differs"),
    [
        ({"body": "Another comment."}, False, "body"),
        ({"article": {"id": "another-article"}}, False, "article id"),
        ({"body": "Another comment.", "article": {"id": "another-article"}}, False, "body and article id"),
        # Of a comment edited since, a late create's body is not compared (the stored text is the edit's):
        # what tells another comment is the creation time, so that is what the message names.
        (
            {"body": "Another comment.", "created_at": "2026-11-29T08:00:00Z"},
            True,
            "created_at (stored: 2026-11-26T10:00:00Z; the comment has been edited since, so its body is not compared)",
        ),
    ],
    ids=["body", "article", "both", "created_at"],
)
def test_a_reused_comment_id_is_refused_naming_what_differs(
    client: FlaskClient, site: SiteCredentials, change: dict[str, Any], edited: bool, differs: str
) -> None:
    created = send(client, site, comment_event(site.name, "c-1"))
    if edited:
        assert send(client, site, updated_event(site.name, "c-1", "Edited text.")).status_code == 202
    other = comment_event(site.name, "c-1")
    other["data"] |= change

    refused = send(client, site, other)

    assert (refused.status_code, refused.get_json()["error"]) == (409, "comment_id_reused")
    message = refused.get_json()["message"]
    stored = f'comment_id "c-1" is already stored (comment {created.get_json()["id"]}) with a different {differs}'
    assert message.startswith(f"{stored}; send an edit as comment.updated"), message


Events = Callable[[str], tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]]
# Each case: events sent first under their own ids, then an event under "msg_reused", then another payload
# under that same id. Together they cover every path that records a receipt.
REUSED_ID_CASES: dict[str, Events] = {
    "create-then-create-of-another-comment": lambda s: ([], comment_event(s, "c-5001"), comment_event(s, "c-5002")),
    "create-then-delete-of-it": lambda s: ([], comment_event(s, "c-6001"), deleted_event(s, "c-6001")),
    "create-then-edit-of-it": lambda s: ([], comment_event(s, "c-1"), updated_event(s, "c-1", "Edited text.")),
    "create-then-the-same-comment-with-another-body": lambda s: (
        [],
        comment_event(s, "c-1"),
        comment_event(s, "c-1", body="Another text altogether."),
    ),
    "repeated-create-then-another-comment": lambda s: (
        [comment_event(s, "c-1")],
        comment_event(s, "c-1"),
        comment_event(s, "c-2"),
    ),
    "edit-then-a-later-edit": lambda s: (
        [comment_event(s, "c-1")],
        updated_event(s, "c-1", "Edited text."),
        updated_event(s, "c-1", "Edited again.", LATER),
    ),
    "update-before-create-then-the-create": lambda s: (
        [],
        updated_event(s, "c-1", "Edited text."),
        comment_event(s, "c-1"),
    ),
    "delete-then-a-later-delete": lambda s: (
        [comment_event(s, "c-1")],
        deleted_event(s, "c-1"),
        deleted_event(s, "c-1", "2026-11-26T13:00:00Z"),
    ),
    "delete-before-create-then-the-create": lambda s: ([], deleted_event(s, "c-1"), comment_event(s, "c-1")),
}


@pytest.mark.parametrize("case", REUSED_ID_CASES.values(), ids=REUSED_ID_CASES.keys())
def test_a_webhook_id_reused_for_another_payload_is_409_and_writes_nothing(
    client: FlaskClient, site: SiteCredentials, engine: Engine, case: Events
) -> None:
    earlier, first, other = case(site.name)
    for event_ in earlier:
        assert send(client, site, event_).status_code in (200, 202)
    accepted = send(client, site, first, "msg_reused")
    assert accepted.status_code in (200, 202)
    before = stored_state(engine)

    refused = send(client, site, other, "msg_reused")

    assert refused.status_code == 409, refused.get_json()
    assert "409" in client.get("/openapi.json").get_json()["paths"]["/webhooks/comments"]["post"]["responses"]
    answer = refused.get_json()
    assert answer["error"] == "webhook_id_reused" and "different payload" in answer["message"]
    assert str(accepted.get_json()["id"]) in answer["message"]
    assert stored_state(engine) == before
    replay = send(client, site, first, "msg_reused")  # the message it names is still answered as a repeat
    assert (replay.status_code, replay.get_json()["id"]) == (200, accepted.get_json()["id"])


@pytest.mark.parametrize("make", EVERY_EVENT, ids=["created", "updated", "deleted"])
def test_a_retry_signed_again_with_the_same_body_is_a_repeat(
    client: FlaskClient, site: SiteCredentials, engine: Engine, make: Callable[[str], dict[str, Any]]
) -> None:
    body = encode(make(site.name))
    sent_at = int(datetime.now(UTC).timestamp())
    first = post(client, body, signed_headers(site.secret, body, message_id="msg_retry", timestamp=sent_at - 60))
    before = stored_state(engine)
    retry = post(client, body, signed_headers(site.secret, body, message_id="msg_retry", timestamp=sent_at))

    assert first.status_code in (200, 202)
    assert (retry.status_code, retry.get_json()["id"]) == (200, first.get_json()["id"])
    assert stored_state(engine) == before


def test_a_retry_encoded_again_with_another_key_order_and_spacing_is_a_repeat(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    event = comment_event(site.name, "c-1")
    first = send(client, site, event, "msg_reencoded")
    before = stored_state(engine)
    reencoded = json.dumps(event, sort_keys=True, indent=2).encode()  # the same message, other bytes
    assert reencoded != encode(event)
    retry = post(client, reencoded, signed_headers(site.secret, reencoded, message_id="msg_reencoded"))

    assert (retry.status_code, retry.get_json()["id"]) == (200, first.get_json()["id"])
    assert stored_state(engine) == before


def test_a_receipt_from_before_the_upgrade_answers_replays_as_before(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    """A receipt without a payload digest (written before migration 0005) cannot tell payloads apart."""
    first = send(client, site, comment_event(site.name, "c-1"), "msg_old")
    with engine.begin() as connection:
        connection.execute(update(WebhookReceipt).values(payload_sha256=None))
    before = stored_state(engine)

    answers = [
        send(client, site, comment_event(site.name, "c-1"), "msg_old"),
        send(client, site, comment_event(site.name, "c-2"), "msg_old"),
        send(client, site, deleted_event(site.name, "c-1"), "msg_old"),
    ]

    assert [(a.status_code, a.get_json()["id"]) for a in answers] == [(200, first.get_json()["id"])] * 3
    assert stored_state(engine) == before


@pytest.mark.parametrize(
    ("module", "make"),
    [(intake, lambda s: comment_event(s, "c-2")), (lifecycle, lambda s: deleted_event(s, "c-1"))],
    ids=["create", "delete"],
)
def test_losing_the_race_for_a_new_webhook_id_to_another_payload_is_409(
    client: FlaskClient,
    site: SiteCredentials,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    module: Any,
    make: Callable[[str], dict[str, Any]],
) -> None:
    """The careful path's interleaving made certain: its check ran before the other payload's commit (seen
    as nothing), so its own receipt meets the unique key; the retry must then refuse it, not answer 200."""
    winner = send(client, site, comment_event(site.name, "c-1"), "msg_raced")
    before = stored_state(engine)
    real = module.repeated_delivery
    calls: list[Any] = []

    def checked_before_the_winner_committed(*args: Any) -> Any:
        calls.append(args)
        return None if len(calls) == 1 else real(*args)

    monkeypatch.setattr(module, "repeated_delivery", checked_before_the_winner_committed)
    loser = send(client, site, make(site.name), "msg_raced")

    assert winner.status_code == 202
    assert loser.status_code == 409 and loser.get_json()["error"] == "webhook_id_reused"
    assert len(calls) == 2  # lost on the unique key once, then refused on the retry
    assert stored_state(engine) == before


def post_at_once(app: Flask, requests: list[tuple[bytes, dict[str, str]]]) -> list[Any]:
    """Each request from its own thread and test client, released together."""
    start = threading.Barrier(len(requests))
    answers: list[Any] = [None] * len(requests)

    def deliver(n: int, body: bytes, headers: dict[str, str]) -> None:
        client = app.test_client()
        start.wait()
        answers[n] = post(client, body, headers)

    threads = [threading.Thread(target=deliver, args=(n, *request)) for n, request in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def test_two_payloads_sent_at_once_under_one_new_webhook_id_store_one_and_refuse_the_other(
    app: Flask, site: SiteCredentials, engine: Engine
) -> None:
    for round_ in range(3):
        webhook_id = f"msg_at_once_{round_}"
        bodies = [encode(comment_event(site.name, f"c-{round_}-{n}")) for n in range(2)]
        answers = post_at_once(app, [(b, signed_headers(site.secret, b, message_id=webhook_id)) for b in bodies])

        assert sorted(a.status_code for a in answers) == [202, 409], [a.get_json() for a in answers]
        stored_id = next(a.get_json()["id"] for a in answers if a.status_code == 202)
        with engine.connect() as connection:
            receipt = connection.execute(select(WebhookReceipt).where(WebhookReceipt.webhook_id == webhook_id)).one()
            stored = connection.scalars(select(Comment.id).where(Comment.external_id.like(f"c-{round_}-%"))).all()
        assert stored == [stored_id] and receipt.comment_id == stored_id
    assert count(engine, Comment) == count(engine, OutboxMessage) == 3


def test_migration_0005_matches_the_models_and_goes_back_and_forth(empty_database_url: str) -> None:
    from sqlalchemy import create_engine, text

    from models.migrate import downgrade_database, upgrade_database
    from tests.support.migrations import column_names, drift_from_the_models, store_an_old_comment

    url = empty_database_url
    upgrade_database(url, "0004")
    engine = create_engine(url)
    with engine.begin() as connection:  # a receipt written before 0005
        store_an_old_comment(connection)
        connection.execute(
            text(
                "INSERT INTO webhook_receipts (site_id, webhook_id, comment_id, received_at)"
                " SELECT site_id, 'msg_old', id, CURRENT_TIMESTAMP FROM comments"
            )
        )
    upgrade_database(url)
    assert drift_from_the_models(url) == []
    with engine.connect() as connection:
        old = connection.execute(text("SELECT webhook_id, payload_sha256 FROM webhook_receipts")).one()
    assert tuple(old) == ("msg_old", None)
    engine.dispose()
    downgrade_database(url, "0004")
    assert "payload_sha256" not in column_names(url, "webhook_receipts")
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT webhook_id FROM webhook_receipts")) == "msg_old"
    engine.dispose()
    upgrade_database(url)
    assert "payload_sha256" in column_names(url, "webhook_receipts")
