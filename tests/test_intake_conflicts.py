"""A ``comment.created`` for a site comment id already stored: a repeat (200) or another comment (409).

On SQLite and PostgreSQL, through the app. A site that reuses its ids (or has a bug) must not be told the
stored comment's status for text nobody moderated; out-of-order deliveries of one comment stay repeats.
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from models.entities import Comment
from tests.conftest import SiteCredentials
from tests.support.signing import comment_event, encode, signed_headers
from tests.test_intake import deleted_event, post, post_at_once, send, stored_state, updated_event

OTHER_BODY = "Cheap pills, no prescription needed!!! www.cheap-rx-pharmacy.xyz"


def queued(redis_url: str) -> int:
    return cast(int, redis.Redis.from_url(redis_url).llen("moderation"))


def assert_refused_as_another_comment(answer: Any, stored_id: int) -> None:
    assert answer.status_code == 409, answer.get_json()
    body = answer.get_json()
    assert set(body) == {"error", "message"} and body["error"] == "comment_id_reused"
    assert "comment.updated" in body["message"] and f"comment {stored_id}" in body["message"]


@pytest.mark.parametrize(
    "change",
    [
        {"body": OTHER_BODY},
        {"article": {"id": "another-article"}},
        {"body": OTHER_BODY, "article": {"id": "another-article"}},
    ],
    ids=["body", "article", "both"],
)
def test_a_create_of_another_comment_under_a_stored_comment_id_is_409_and_writes_nothing(
    client: FlaskClient, site: SiteCredentials, engine: Engine, redis_url: str, change: dict[str, Any]
) -> None:
    first = send(client, site, comment_event(site.name, "c-1"))
    before, queued_before = stored_state(engine), queued(redis_url)

    other = comment_event(site.name, "c-1")
    other["data"] |= change
    refused = send(client, site, other, "msg_other")
    retried = send(client, site, other, "msg_other")  # nothing was recorded: its retry is refused too

    assert first.status_code == 202
    assert_refused_as_another_comment(refused, first.get_json()["id"])
    assert_refused_as_another_comment(retried, first.get_json()["id"])
    assert stored_state(engine) == before and queued(redis_url) == queued_before


def test_a_repeat_may_differ_in_other_fields_and_in_its_encoding(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    first = send(client, site, comment_event(site.name, "c-1"))
    repeat = comment_event(site.name, "c-1", created_at="2026-11-26T10:00:05Z", parent_id="c-0")
    repeat["data"]["author"] = {"name": "Jan B."}
    repeat["data"]["article"] = {"id": "massage-therapy", "title": "Retitled"}
    reencoded = json.dumps(repeat, sort_keys=True, indent=2).encode()
    before = stored_state(engine)

    again = post(client, reencoded, signed_headers(site.secret, reencoded))

    assert (again.status_code, again.get_json()["id"]) == (200, first.get_json()["id"])
    assert stored_state(engine)[0] == before[0]


def test_after_a_refusal_the_edit_sent_as_comment_updated_is_classified(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    """The 409's advice works: the same change as an update is a new version of the comment."""
    first = send(client, site, comment_event(site.name, "c-1"))
    assert send(client, site, comment_event(site.name, "c-1", body=OTHER_BODY)).status_code == 409

    edit = send(client, site, updated_event(site.name, "c-1", OTHER_BODY))

    assert (edit.status_code, edit.get_json()["id"]) == (202, first.get_json()["id"])
    with engine.connect() as connection:
        assert connection.scalar(select(Comment.body)) == OTHER_BODY


def test_the_original_create_arriving_after_edits_is_still_a_repeat(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    """Out of order, as for an update that overtook its create: the stored version is newer, so the create
    (with the original body) is stale and acknowledged, and the edit stays."""
    created = send(client, site, comment_event(site.name, "c-1"))
    edited = send(client, site, updated_event(site.name, "c-1", OTHER_BODY))
    before = stored_state(engine)

    late_copy = send(client, site, comment_event(site.name, "c-1"))

    assert [a.status_code for a in (created, edited, late_copy)] == [202, 202, 200]
    assert late_copy.get_json()["id"] == created.get_json()["id"]
    assert stored_state(engine)[0] == before[0]


def test_a_create_whose_creation_time_differs_from_an_edited_comments_is_409(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    """An edited comment's text cannot be compared with a create's; its creation time still tells another
    comment (an id the site used again days later) from the late original."""
    created = send(client, site, comment_event(site.name, "c-1"))
    send(client, site, updated_event(site.name, "c-1", "Edited text."))
    before = stored_state(engine)

    reused = send(client, site, comment_event(site.name, "c-1", body=OTHER_BODY, created_at="2026-11-29T08:00:00Z"))

    assert_refused_as_another_comment(reused, created.get_json()["id"])
    assert stored_state(engine) == before


def test_the_create_after_an_update_that_stored_the_comment_is_a_repeat(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    """The update had no created_at, so none is stored to compare with: the late create is acknowledged."""
    update = updated_event(site.name, "c-1", OTHER_BODY)
    del update["data"]["created_at"]
    stored = send(client, site, update)

    late_create = send(client, site, comment_event(site.name, "c-1"))

    assert (late_create.status_code, late_create.get_json()["id"]) == (200, stored.get_json()["id"])
    with engine.connect() as connection:
        assert connection.scalar(select(Comment.body)) == OTHER_BODY


@pytest.mark.parametrize("create_first", [True, False], ids=["deleted", "tombstone"])
def test_a_create_of_a_deleted_comment_id_is_acknowledged_as_deleted(
    client: FlaskClient, site: SiteCredentials, engine: Engine, redis_url: str, create_first: bool
) -> None:
    """A delete is final and a tombstone has no text: nothing of it is published, so the site is told
    `deleted` (never a decision) whatever body the create carries."""
    if create_first:
        send(client, site, comment_event(site.name, "c-1"))
    deleted = send(client, site, deleted_event(site.name, "c-1"))
    before, queued_before = stored_state(engine)[0], queued(redis_url)

    late = send(client, site, comment_event(site.name, "c-1", body=OTHER_BODY))

    assert (late.status_code, late.get_json()) == (200, deleted.get_json())
    assert late.get_json()["status"] == "deleted"
    assert stored_state(engine)[0] == before and queued(redis_url) == queued_before


def test_an_erased_comment_is_repeated_by_its_body_and_refused_for_another(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    """The erasure removed the author's data, not the text: a repeat still matches (and stores no author
    data again); another body is still another comment."""
    created = send(client, site, comment_event(site.name, "c-1"))
    erase = json.dumps({"email": "jan@example.org"}).encode()
    erased = client.post(f"/api/authors/erase?site={site.name}", data=erase, headers=signed_headers(site.secret, erase))
    assert erased.get_json()["comments_erased"] == 1

    repeat = send(client, site, comment_event(site.name, "c-1"))
    other = send(client, site, comment_event(site.name, "c-1", body=OTHER_BODY))

    assert (repeat.status_code, repeat.get_json()["id"]) == (200, created.get_json()["id"])
    assert_refused_as_another_comment(other, created.get_json()["id"])
    with engine.connect() as connection:
        assert connection.execute(select(Comment.author_email, Comment.author_ip)).one() == (None, None)


def test_two_different_creates_of_one_new_comment_id_at_once_store_one_and_refuse_the_other(
    app: Flask, site: SiteCredentials, engine: Engine
) -> None:
    for round_ in range(3):
        bodies = [encode(comment_event(site.name, f"c-{round_}", body=f"Text {n} of round {round_}.")) for n in (1, 2)]
        answers = post_at_once(app, [(body, signed_headers(site.secret, body)) for body in bodies])

        assert sorted(a.status_code for a in answers) == [202, 409], [a.get_json() for a in answers]
        assert next(a for a in answers if a.status_code == 409).get_json()["error"] == "comment_id_reused"
    with engine.connect() as connection:
        assert len(connection.scalars(select(Comment.id)).all()) == 3
