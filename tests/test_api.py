"""The pull API (signed per site), the served OpenAPI document, and the health endpoints."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import jsonschema
import pytest
import redis
from flask import Flask, g
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url
from werkzeug.test import TestResponse

from models.db import create_db_engine, make_session_factory
from models.entities import Comment, Decision, Site
from models.migrate import upgrade_database
from moderation.callbacks import decision_payload
from moderation.reasons import REASON_LABELS, REJECT_REASONS, Reason
from moderation.sites import SiteKeyCache, create_site
from server.factory import create_app
from server.settings import Settings
from tests.conftest import SiteCredentials, fast_settings
from tests.support.services import POSTGRES_ADMIN_URL, postgres_reachable
from tests.support.signing import comment_event, encode, signed_headers, without_server_time
from tests.support.site_reads import frozen_cache_clock, site_reads
from webhooks import EveryFewSeconds
from webhooks.signatures import USED_ID_SECONDS


def schema_of(document: dict[str, Any], name: str) -> dict[str, Any]:
    """A component schema with its references resolvable by jsonschema."""
    return {"$ref": f"#/components/schemas/{name}", "components": document["components"]}


def submit(client: FlaskClient, site: SiteCredentials, comment_id: str, article: str = "massage-therapy") -> int:
    event = comment_event(site.name, comment_id)
    event["data"]["article"]["id"] = article
    body = encode(event)
    response = client.post("/webhooks/comments", data=body, headers=signed_headers(site.secret, body))
    assert response.status_code == 202
    return int(response.get_json()["id"])


def set_status(engine: Engine, comment_id: int, status: str) -> None:
    with make_session_factory(engine).begin() as session:
        comment = session.get(Comment, comment_id)
        assert comment is not None
        comment.status = status


def test_openapi_document_is_valid_and_describes_every_route(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    validate(document)
    routes = {
        rule.rule.replace("<int:comment_id>", "{id}")
        for rule in client.application.url_map.iter_rules()
        if rule.endpoint.startswith(("webhooks.", "health."))
    }
    assert routes <= set(document["paths"]) | {"/openapi.json"}
    assert set(document["paths"]["/webhooks/comments"]["post"]["responses"]) == {
        "200",
        "202",
        "400",
        "401",
        "409",
        "413",
        "415",
        "429",
        "503",
    }
    assert "commentDecided" in document["webhooks"]


def test_responses_match_the_openapi_schemas(client: FlaskClient, site: SiteCredentials) -> None:
    document = client.get("/openapi.json").get_json()
    body = encode(comment_event(site.name, "c-1"))
    accepted = client.post("/webhooks/comments", data=body, headers=signed_headers(site.secret, body))
    jsonschema.validate(accepted.get_json(), schema_of(document, "AcceptedBody"))
    bad = client.post("/webhooks/comments", data=b"{}", headers=signed_headers(site.secret, b"{}"))
    jsonschema.validate(bad.get_json(), schema_of(document, "ErrorBody"))

    comment_id = accepted.get_json()["id"]
    view = client.get(f"/api/comments/{comment_id}?site={site.name}", headers=signed_headers(site.secret, b""))
    jsonschema.validate(view.get_json(), schema_of(document, "CommentView"))
    listing = client.get(f"/api/comments?site={site.name}", headers=signed_headers(site.secret, b""))
    jsonschema.validate(listing.get_json(), schema_of(document, "CommentList"))


def test_the_request_example_validates_against_the_schema(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    jsonschema.validate(comment_event("backpain-advisor", "c-1029"), schema_of(document, "CommentCreated"))


def test_get_comment_needs_the_sites_own_signature(client: FlaskClient, site: SiteCredentials, engine: Engine) -> None:
    comment_id = submit(client, site, "c-1")
    url = f"/api/comments/{comment_id}?site={site.name}"
    assert client.get(url).status_code == 401
    assert client.get(url, headers=signed_headers("whsec_" + "A" * 44, b"")).status_code == 401
    ok = client.get(url, headers=signed_headers(site.secret, b""))
    assert ok.status_code == 200
    assert ok.get_json()["comment_id"] == "c-1" and ok.get_json()["decision"] is None

    with make_session_factory(engine).begin() as session:
        _, other_secret = create_site(session, "other-site")
    other = client.get(f"/api/comments/{comment_id}?site=other-site", headers=signed_headers(other_secret, b""))
    assert other.status_code == 404  # another site's comment is not found, not forbidden


def test_refused_api_requests_read_the_site_at_most_once_per_interval(
    app: Flask, site: SiteCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad signature, the same unknown site again, or a new unknown name each time: anyone can send these."""
    clock = frozen_cache_clock(monkeypatch)
    monkeypatch.setattr(SiteKeyCache, "MAX_UNKNOWN_NAMES", 5)
    client = app.test_client()
    wrong = "whsec_" + "A" * 44
    names = [site.name] * 20 + ["no-such-site"] * 20 + [f"no-such-site-{n}" for n in range(20)]
    with site_reads(app) as reads:
        codes = [
            client.get(f"/api/comments?site={name}", headers=signed_headers(wrong, b"")).status_code for name in names
        ]
    assert codes == [401] * len(names)
    assert len(reads) <= 2 + SiteKeyCache.MAX_UNKNOWN_NAMES  # the site once, then unknown names up to the flood

    clock.advance(SiteKeyCache.REREAD_SECONDS)  # a secret made since would verify: the site is read again once
    url = f"/api/comments?site={site.name}"
    with site_reads(app) as reads:
        assert [client.get(url, headers=signed_headers(wrong, b"")).status_code for _ in range(20)] == [401] * 20
        assert client.get(url, headers=signed_headers(site.secret, b"")).status_code == 200
    assert len(reads) == 1


@pytest.mark.parametrize("age", [0, 3600, -3600], ids=["fresh", "stale", "future"])
def test_a_site_that_does_not_exist_is_answered_like_a_wrong_signature(
    client: FlaskClient, site: SiteCredentials, age: int
) -> None:
    """Word for word, but for the server's clock reading, which may tick between the two requests."""
    wrong = signed_headers("whsec_" + "A" * 44, b"", message_id="msg_1", timestamp=int(time.time()) - age)
    answers = [client.get(f"/api/comments?site={name}", headers=wrong) for name in (site.name, "no-such-site")]
    assert [a.status_code for a in answers] == [401, 401]
    messages, readings = zip(*(without_server_time(a.get_json()["message"]) for a in answers), strict=True)
    assert messages[0] == messages[1]
    assert [a.get_json()["error"] for a in answers] == ["invalid_signature"] * 2
    # A timestamp off the clock is blamed, not the signature, and the answer says what the clock reads.
    assert messages[0].startswith("the signature does not verify: ") == (age == 0)
    assert ("too old" in messages[0], "too new" in messages[0]) == (age > 0, age < 0)
    assert [reading is not None for reading in readings] == [age != 0] * 2


def test_list_filters_by_article_and_status_and_pages(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    ids = [submit(client, site, f"c-{n}", article="sciatica" if n % 2 else "massage-therapy") for n in range(5)]
    set_status(engine, ids[1], "approved")
    set_status(engine, ids[3], "approved")
    set_status(engine, ids[2], "approved")

    def listing(**params: str) -> dict[str, Any]:
        query = "&".join(f"{k}={v}" for k, v in {"site": site.name, **params}.items())
        response = client.get(f"/api/comments?{query}", headers=signed_headers(site.secret, b""))
        assert response.status_code == 200
        result: dict[str, Any] = response.get_json()
        return result

    approved_sciatica = listing(article="sciatica", status="approved")
    assert [c["id"] for c in approved_sciatica["comments"]] == [ids[1], ids[3]]
    first = listing(limit="2")
    assert [c["id"] for c in first["comments"]] == ids[:2] and first["next_after"] == ids[1]
    rest = listing(limit="2", after=str(ids[1]))
    assert [c["id"] for c in rest["comments"]] == ids[2:4]


@pytest.mark.parametrize(
    ("query", "bad"),
    [
        ("status=published", {"status"}),
        ("limit=ten", {"limit"}),
        ("after=x", {"after"}),
        ("limit=0", {"limit"}),
        ("limit=501", {"limit"}),
        ("limit=100000", {"limit"}),
        ("limit=abc&after=5", {"limit"}),
        ("limit=5&after=-1", {"after"}),
        ("limit=abc&after=x&status=published", {"limit", "after", "status"}),
        (f"comment_id={'c' * 201}", {"comment_id"}),
        ("article=", {"article"}),  # once read as no filter at all: every comment listed
        ("article=&comment_id=", {"article", "comment_id"}),
    ],
)
def test_list_rejects_bad_query_parameters_naming_only_the_bad_ones(
    client: FlaskClient, site: SiteCredentials, query: str, bad: set[str]
) -> None:
    response = client.get(f"/api/comments?site={site.name}&{query}", headers=signed_headers(site.secret, b""))
    assert response.status_code == 400
    answer = response.get_json()
    assert answer["error"] == "invalid_query"
    assert {field["field"] for field in answer["fields"]} == bad
    assert all(name in answer["message"] for name in bad)


@pytest.mark.parametrize("limit", ["1", "500"])
def test_the_documented_limits_of_limit_are_accepted(client: FlaskClient, site: SiteCredentials, limit: str) -> None:
    response = client.get(f"/api/comments?site={site.name}&limit={limit}", headers=signed_headers(site.secret, b""))
    assert response.status_code == 200
    limit_schema = next(
        p["schema"]
        for p in client.get("/openapi.json").get_json()["paths"]["/api/comments"]["get"]["parameters"]
        if p["name"] == "limit"
    )
    assert (limit_schema["minimum"], limit_schema["maximum"]) == (1, 500)


def test_list_finds_a_comment_by_the_sites_own_id(client: FlaskClient, site: SiteCredentials, engine: Engine) -> None:
    ids = {name: submit(client, site, name) for name in ("c-7", "c-70", "C-7")}
    set_status(engine, ids["c-7"], "approved")

    def found(query: str) -> list[int]:
        response = client.get(f"/api/comments?site={site.name}&{query}", headers=signed_headers(site.secret, b""))
        assert response.status_code == 200
        return [comment["id"] for comment in response.get_json()["comments"]]

    assert found("comment_id=c-7") == [ids["c-7"]]  # exact: neither c-70 nor C-7
    assert found("comment_id=c-7&status=approved") == [ids["c-7"]]
    assert found("comment_id=c-70&status=approved") == []
    assert found("comment_id=c-7&article=sciatica") == []
    assert found("comment_id=unknown") == []


def test_the_openapi_names_the_services_id_and_the_sites_comment_id_apart(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    assert "/api/comments/{comment_id}" not in paths
    [path_param] = [p for p in paths["/api/comments/{id}"]["get"]["parameters"] if p["in"] == "path"]
    assert path_param["name"] == "id" and path_param["schema"] == {"type": "integer"}
    assert "returned by intake" in path_param["description"]
    [by_site_id] = [p for p in paths["/api/comments"]["get"]["parameters"] if p["name"] == "comment_id"]
    assert by_site_id["in"] == "query" and by_site_id["schema"]["type"] == "string"


def test_the_openapi_declares_retry_after_on_429_and_503(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    answers = [
        paths["/webhooks/comments"]["post"]["responses"]["429"],
        paths["/webhooks/comments"]["post"]["responses"]["503"],
        paths["/api/comments"]["get"]["responses"]["503"],
        paths["/api/comments/{id}"]["get"]["responses"]["503"],
        paths["/api/authors/erase"]["post"]["responses"]["503"],
    ]
    for answer in answers:
        assert answer["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}


# --- unknown and repeated query parameters are refused, not ignored --------------------------------

LIST_UNKNOWN = "unknown parameter: one of site, article, status, comment_id, limit, after"
ONLY_SITE = "unknown parameter: one of site"
TWICE = "given more than once: give it once"


def refused_fields(response: TestResponse) -> list[dict[str, str]]:
    """The 400 ``invalid_query`` answer's fields, checked to have the documented error shape."""
    assert response.status_code == 400, response.get_data(as_text=True)
    answer = response.get_json()
    assert set(answer) == {"error", "message", "fields"} and answer["error"] == "invalid_query"
    assert all(field["field"] in answer["message"] for field in answer["fields"])
    fields: list[dict[str, str]] = answer["fields"]
    return fields


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("state=approved", [{"field": "state", "message": LIST_UNKNOWN}]),  # a typo for status
        ("article_id=sciatica", [{"field": "article_id", "message": LIST_UNKNOWN}]),  # the response's name
        ("Status=approved", [{"field": "Status", "message": LIST_UNKNOWN}]),
        ("status=approved&published", [{"field": "published", "message": LIST_UNKNOWN}]),
        ("status=approved&status=held", [{"field": "status", "message": TWICE}]),
        ("status=approved&status=approved", [{"field": "status", "message": TWICE}]),
        ("limit=1&limit=oops", [{"field": "limit", "message": TWICE}]),  # one error, not two
        ("status=approved&site=SITE", [{"field": "site", "message": TWICE}]),
        (
            "state=approved&limit=0&article=a&article=b",
            [
                {"field": "state", "message": LIST_UNKNOWN},
                {"field": "article", "message": TWICE},
                {"field": "limit", "message": "an integer between 1 and 500"},
            ],
        ),
    ],
)
def test_list_refuses_unknown_and_repeated_query_parameters_instead_of_ignoring_them(
    client: FlaskClient, site: SiteCredentials, engine: Engine, query: str, fields: list[dict[str, str]]
) -> None:
    """An ignored filter listed held and rejected comments as if they were approved: a site publishing what
    the API lists would have published them."""
    ids = [submit(client, site, f"c-{n}") for n in range(3)]
    for comment_id, status in zip(ids, ["approved", "held", "rejected"], strict=True):
        set_status(engine, comment_id, status)
    url = f"/api/comments?site={site.name}&{query.replace('SITE', site.name)}"
    assert refused_fields(client.get(url, headers=signed_headers(site.secret, b""))) == fields


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("x=1", [{"field": "x", "message": ONLY_SITE}]),
        ("status=approved", [{"field": "status", "message": ONLY_SITE}]),
        ("site=SITE", [{"field": "site", "message": TWICE}]),
        (
            "site=other-site&fields=all",
            [{"field": "site", "message": TWICE}, {"field": "fields", "message": ONLY_SITE}],
        ),
    ],
)
def test_get_comment_refuses_unknown_and_repeated_query_parameters(
    client: FlaskClient, site: SiteCredentials, query: str, fields: list[dict[str, str]]
) -> None:
    comment_id = submit(client, site, "c-1")
    url = f"/api/comments/{comment_id}?site={site.name}&{query.replace('SITE', site.name)}"
    assert refused_fields(client.get(url, headers=signed_headers(site.secret, b""))) == fields
    # Refused whether or not the comment exists: the query is checked before the lookup.
    missing = f"/api/comments/{comment_id + 1000}?site={site.name}&{query.replace('SITE', site.name)}"
    assert refused_fields(client.get(missing, headers=signed_headers(site.secret, b""))) == fields


def test_the_erasure_api_refuses_an_unknown_query_parameter_and_erases_nothing(
    client: FlaskClient, site: SiteCredentials
) -> None:
    submit(client, site, "c-1")  # written by jan@example.org
    body = json.dumps({"comment_ids": ["c-404"]}).encode()
    url = f"/api/authors/erase?site={site.name}&email=jan@example.org"
    answer = client.post(url, data=body, headers=signed_headers(site.secret, body))
    assert refused_fields(answer) == [{"field": "email", "message": ONLY_SITE}]
    twice = client.post(f"{url.split('&')[0]}&site={site.name}", data=body, headers=signed_headers(site.secret, body))
    assert refused_fields(twice) == [{"field": "site", "message": TWICE}]
    by_email = json.dumps({"email": "jan@example.org"}).encode()
    erased = client.post(
        f"/api/authors/erase?site={site.name}", data=by_email, headers=signed_headers(site.secret, by_email)
    )
    assert erased.status_code == 200 and erased.get_json()["comments_erased"] == 1  # nothing was erased before


def test_unknown_query_parameters_are_looked_at_only_after_the_signature(
    client: FlaskClient, site: SiteCredentials
) -> None:
    """An unsigned or wrongly signed request is a 401 whatever its query says, as before."""
    comment_id = submit(client, site, "c-1")
    forged = "whsec_" + "A" * 44
    for url in (
        f"/api/comments?site={site.name}&state=approved",
        f"/api/comments?site={site.name}&status=approved&status=held",
        "/api/comments?site=no-such-site&state=approved",
        f"/api/comments/{comment_id}?site={site.name}&x=1",
        f"/api/comments/{comment_id}?site={site.name}&site={site.name}",
    ):
        for headers in ({}, signed_headers(forged, b"")):
            answer = client.get(url, headers=headers)
            assert (answer.status_code, answer.get_json()["error"]) == (401, "invalid_signature"), url
    # The first `site` is the one whose secret must sign: a second one cannot stand in for it.
    first_unknown = f"/api/comments/{comment_id}?site=no-such-site&site={site.name}"
    answer = client.get(first_unknown, headers=signed_headers(site.secret, b""))
    assert (answer.status_code, answer.get_json()["error"]) == (401, "invalid_signature")
    body = json.dumps({"email": "jan@example.org"}).encode()
    unsigned = client.post(
        f"/api/authors/erase?site={site.name}&email=x", data=body, headers={"content-type": "application/json"}
    )
    assert (unsigned.status_code, unsigned.get_json()["error"]) == (401, "invalid_signature")
    # A body on a GET is still refused first, as it was.
    callback = b'{"type": "comment.decided"}'
    with_body = client.open(
        f"/api/comments?site={site.name}&state=approved",
        method="GET",
        data=callback,
        headers=signed_headers(site.secret, callback),
    )
    assert (with_body.status_code, with_body.get_json()["error"]) == (400, "invalid_request")


def test_the_openapi_says_unknown_and_repeated_query_parameters_are_refused(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    for operation in (paths["/api/comments"]["get"], paths["/api/comments/{id}"]["get"]):
        assert "given twice" in operation["description"] and "`invalid_query`" in operation["description"]
        assert "`invalid_query`" in operation["responses"]["400"]["description"]
    assert "`invalid_query`" in paths["/api/authors/erase"]["post"]["responses"]["400"]["description"]


# --- paging, and what the callback's fields are --------------------------------------------------


def test_a_full_last_page_has_a_next_after_and_the_page_after_it_is_empty_as_documented(
    client: FlaskClient, site: SiteCredentials
) -> None:
    ids = [submit(client, site, f"c-{n}") for n in range(2)]

    def page(query: str) -> dict[str, Any]:
        response = client.get(f"/api/comments?site={site.name}&{query}", headers=signed_headers(site.secret, b""))
        assert response.status_code == 200
        result: dict[str, Any] = response.get_json()
        return result

    full_last = page("limit=2")
    assert [c["id"] for c in full_last["comments"]] == ids and full_last["next_after"] == ids[-1]
    assert page(f"limit=2&after={ids[-1]}") == {"comments": [], "next_after": None}
    short = page("limit=3")
    assert [c["id"] for c in short["comments"]] == ids and short["next_after"] is None

    document = client.get("/openapi.json").get_json()
    next_after = document["components"]["schemas"]["CommentList"]["properties"]["next_after"]["description"]
    assert "A full last page still has a `next_after`" in next_after
    assert "empty page with `next_after: null`" in next_after
    assert "empty page with `next_after: null`" in document["paths"]["/api/comments"]["get"]["description"]


def test_the_openapi_says_the_callbacks_id_is_the_comment_id_intake_returned(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    described = document["components"]["schemas"]["DecidedData"]["properties"]["id"]["description"]
    assert "the `id` intake returned" in described and "not the id of a decision" in described
    # And it is so: the payload carries the comment's id, not the decision's.
    site = Site(name="backpain-advisor")
    comment = Comment(id=17, external_id="c-1029", article_id="massage-therapy", status="held")
    decision = Decision(
        id=99,
        comment_id=17,
        outcome="hold",
        spam_score=0.01,
        advice_score=0.97,
        reasons=["medical_advice"],
        model_version="v1",
        decided_by="model",
        created_at=datetime.now(UTC),
    )
    assert decision_payload("comment.decided", site, comment, decision)["data"]["id"] == 17


# What a decision can carry, worked out here from the two vocabularies rather than read from the code's own list.
EVERY_REASON = [reason.value for reason in Reason] + [r for r in REJECT_REASONS if r not in {x.value for x in Reason}]


def test_the_openapi_enumerates_every_reason_a_decision_can_carry(client: FlaskClient) -> None:
    """A site sees the vocabulary in the document, and a reason added to the code appears there by itself."""
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    assert schemas["Reason"]["type"] == "string"
    assert schemas["Reason"]["enum"] == EVERY_REASON
    for payload in ("DecisionView", "DecidedData"):  # the pull API's decision and the callback's data
        assert schemas[payload]["properties"]["reasons"]["items"] == {"$ref": "#/components/schemas/Reason"}
    assert set(REASON_LABELS) == set(EVERY_REASON)  # the one place names each with its label


def test_a_stored_decision_with_every_reason_is_sent_as_plain_strings_the_openapi_schemas_accept(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    document = client.get("/openapi.json").get_json()
    comment_id = submit(client, site, "c-1")
    set_status(engine, comment_id, "rejected")
    with make_session_factory(engine).begin() as session:
        session.add(
            Decision(
                comment_id=comment_id,
                outcome="reject",
                is_current=True,
                reasons=EVERY_REASON,
                decided_by="model",
                created_at=datetime.now(UTC),
            )
        )
    view = client.get(f"/api/comments/{comment_id}?site={site.name}", headers=signed_headers(site.secret, b""))
    assert view.get_json()["decision"]["reasons"] == EVERY_REASON
    jsonschema.validate(view.get_json(), schema_of(document, "CommentView"))
    with make_session_factory(engine)() as session:
        comment = session.get_one(Comment, comment_id)
        decision = session.scalars(select(Decision).where(Decision.comment_id == comment_id)).one()
        callback = json.loads(json.dumps(decision_payload("comment.decided", comment.site, comment, decision)))
    assert callback["data"]["reasons"] == EVERY_REASON
    jsonschema.validate(callback, schema_of(document, "DecidedEvent"))

    # And the schemas hold a site to those values: a reason the service never gives is refused.
    made_up = {**callback, "data": {**callback["data"], "reasons": ["spamm"]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(made_up, schema_of(document, "DecidedEvent"))


def test_the_openapi_says_every_classified_edit_gets_a_comment_decided_callback(client: FlaskClient) -> None:
    """As docs/webhooks.md says and the code does: also when the edit's outcome stayed the one the site was told."""
    document = client.get("/openapi.json").get_json()
    callback = document["webhooks"]["commentDecided"]["post"]["description"]
    intake = document["paths"]["/webhooks/comments"]["post"]["description"]
    for description in (callback, intake):
        assert "differs" not in description and "changed outcome" not in description
        assert "also when the outcome stayed the same" in description
    assert "after each edit with a new body once the new text is classified" in callback


# --- replayed API requests ------------------------------------------------------------------------


def used_id_keys(redis_url: str) -> list[str]:
    keys = cast(list[bytes], redis.Redis.from_url(redis_url).keys("*api-request-id*"))
    return [key.decode() for key in keys]


REUSED = {
    "error": "webhook_id_reused",
    "message": "webhook-id already used for another request: each API request needs its own id (a retry of the "
    "same request may keep it)",
}


def test_a_captured_api_request_cannot_be_replayed_to_any_other_api_url(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    comment_id = submit(client, site, "c-1")
    captured = signed_headers(site.secret, b"")
    status_url = f"/api/comments/{comment_id}?site={site.name}"
    assert client.get(status_url, headers=captured).status_code == 200
    # The same request again (a retry, or polling one status URL) keeps its id, as Standard Webhooks senders do.
    assert client.get(status_url, headers=captured).status_code == 200

    for url in (f"/api/comments?site={site.name}&status=approved", f"/api/comments/{comment_id}?site={site.name}&x=1"):
        replay = client.get(url, headers=captured)
        assert (replay.status_code, replay.get_json()) == (401, REUSED)
    # A new id for another request is fine.
    assert client.get(f"/api/comments?site={site.name}", headers=signed_headers(site.secret, b"")).status_code == 200

    # Another site may happen to pick the same id: ids are remembered per site.
    with make_session_factory(engine).begin() as session:
        _, other_secret = create_site(session, "other-site")
    same_id = signed_headers(other_secret, b"", message_id=captured["webhook-id"])
    assert client.get("/api/comments?site=other-site", headers=same_id).status_code == 200


def test_a_message_the_sites_secret_signed_for_another_purpose_does_not_open_the_api(
    client: FlaskClient, site: SiteCredentials
) -> None:
    """A callback (or a webhook delivery) is signed with the same secret over its body: a GET has none."""
    callback = json.dumps({"type": "comment.decided", "data": {"comment_id": "c-1", "status": "approved"}}).encode()
    for url in (f"/api/comments?site={site.name}", f"/api/comments/1?site={site.name}"):
        answer = client.open(url, method="GET", data=callback, headers=signed_headers(site.secret, callback))
        assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_request"
        # HEAD answers every GET route: its length alone would tell whether a comment exists.
        head = client.open(url, method="HEAD", data=callback, headers=signed_headers(site.secret, callback))
        assert head.status_code == 400


def test_an_erasure_request_is_retried_under_its_id_but_the_id_names_only_it(
    client: FlaskClient, site: SiteCredentials
) -> None:
    body = json.dumps({"email": "jan@example.org"}).encode()
    headers = signed_headers(site.secret, body)
    assert client.post(f"/api/authors/erase?site={site.name}", data=body, headers=headers).status_code == 200
    retry = client.post(f"/api/authors/erase?site={site.name}", data=body, headers=headers)
    assert retry.status_code == 200 and retry.get_json()["comments_erased"] == 0
    other = json.dumps({"email": "ann@example.org"}).encode()
    same_id = signed_headers(site.secret, other, message_id=headers["webhook-id"])
    again = client.post(f"/api/authors/erase?site={site.name}", data=other, headers=same_id)
    assert (again.status_code, again.get_json()) == (401, REUSED)


def test_the_used_id_store_keeps_a_keyed_fingerprint_that_confirms_no_guess_of_an_erasures_email(
    settings: Settings, site: SiteCredentials, redis_url: str
) -> None:
    """Redis runs with appendonly, so what the store keeps stays on disk: a plain SHA-256 of an erasure request
    would confirm a guessed e-mail to anyone with the file, who hashes a guessed body. The key holds the site and
    the id only. Every web process (one SECRET_KEY) agrees on the fingerprint; a retry is still accepted, and the
    id on another request still refused."""
    first, second = create_app(settings).test_client(), create_app(settings).test_client()
    url = f"/api/authors/erase?site={site.name}"
    body = json.dumps({"email": "jan@example.org"}).encode()
    headers = signed_headers(site.secret, body)
    assert first.post(url, data=body, headers=headers).status_code == 200

    [key] = used_id_keys(redis_url)
    assert key == f"moderation:api-request-id:{site.name}:{headers['webhook-id']}"
    stored = cast(bytes, redis.Redis.from_url(redis_url).get(key)).decode()
    assert stored != hashlib.sha256(f"POST {url}\n".encode() + body).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", stored)

    assert second.post(url, data=body, headers=headers).status_code == 200  # a retry, on another web process
    other = json.dumps({"email": "ann@example.org"}).encode()
    same_id = signed_headers(site.secret, other, message_id=headers["webhook-id"])
    refused = second.post(url, data=other, headers=same_id)
    assert (refused.status_code, refused.get_json()) == (401, REUSED)


def test_unsigned_requests_leave_no_used_id_behind(client: FlaskClient, site: SiteCredentials, redis_url: str) -> None:
    forged = signed_headers("whsec_" + "A" * 44, b"", message_id="msg_chosen")
    assert client.get(f"/api/comments?site={site.name}", headers=forged).get_json()["error"] == "invalid_signature"
    assert used_id_keys(redis_url) == []
    genuine = signed_headers(site.secret, b"", message_id="msg_chosen")
    assert client.get(f"/api/comments?site={site.name}", headers=genuine).status_code == 200


@pytest.mark.parametrize("webhook_id", ["req_\x00nul", "req_\x1b[2J", "r" * 201], ids=["nul", "escape", "too-long"])
def test_an_api_request_id_too_long_or_with_control_characters_is_refused_and_not_remembered(
    client: FlaskClient, site: SiteCredentials, redis_url: str, webhook_id: str
) -> None:
    """The API takes its webhook-id through the same check as intake: refused before it is stored in Redis."""
    answer = client.get(
        f"/api/comments?site={site.name}", headers=signed_headers(site.secret, b"", message_id=webhook_id)
    )
    assert answer.status_code == 401 and answer.get_json()["error"] == "invalid_signature"
    assert webhook_id not in answer.get_json()["message"]
    assert used_id_keys(redis_url) == []


def test_used_ids_are_shared_by_every_web_process_through_redis(
    settings: Settings, site: SiteCredentials, redis_url: str
) -> None:
    first, second = create_app(settings).test_client(), create_app(settings).test_client()
    headers = signed_headers(site.secret, b"")
    assert first.get(f"/api/comments?site={site.name}", headers=headers).status_code == 200
    assert second.get(f"/api/comments?site={site.name}&status=held", headers=headers).status_code == 401
    assert second.get(f"/api/comments?site={site.name}", headers=headers).status_code == 200  # the same request
    [key] = used_id_keys(redis_url)
    assert key.endswith(f":{site.name}:{headers['webhook-id']}")
    # Kept while a replay could still verify (±5 minutes around its timestamp), not forever.
    ttl = cast(int, redis.Redis.from_url(redis_url).ttl(key))
    assert 2 * 300 < ttl <= USED_ID_SECONDS


def test_used_ids_are_remembered_in_the_process_while_redis_is_down(settings: Settings, site: SiteCredentials) -> None:
    app = create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    client = app.test_client()
    headers = signed_headers(site.secret, b"")
    assert client.get(f"/api/comments?site={site.name}", headers=headers).status_code == 200
    assert client.get(f"/api/comments?site={site.name}", headers=headers).status_code == 200  # a retry
    replay = client.get(f"/api/comments?site={site.name}&status=held", headers=headers)
    assert replay.status_code == 401 and replay.get_json()["error"] == "webhook_id_reused"
    assert client.get(f"/api/comments?site={site.name}", headers=signed_headers(site.secret, b"")).status_code == 200


# --- the erasure API answers bad JSON like the webhook ------------------------------------------


@pytest.mark.parametrize("raw", [b"{", b'{"email": "jan@example.org",}', b"not json"])
def test_the_erasure_api_answers_invalid_json_like_the_webhook(
    client: FlaskClient, site: SiteCredentials, raw: bytes
) -> None:
    erase = client.post(f"/api/authors/erase?site={site.name}", data=raw, headers=signed_headers(site.secret, raw))
    webhook = client.post("/webhooks/comments", data=raw, headers=signed_headers(site.secret, raw))
    assert erase.status_code == webhook.status_code == 400
    assert erase.get_json() == webhook.get_json()
    assert erase.get_json()["error"] == "invalid_json"
    assert erase.get_json()["message"].startswith("the body is not valid JSON: ")


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": True, "schema": True, "broker": True}


def test_readiness_is_503_when_the_broker_is_down(settings: Any) -> None:
    from server.factory import create_app

    app = create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["broker"] is False


def test_metrics_count_intake_and_read_state(client: FlaskClient, site: SiteCredentials) -> None:
    body = encode(comment_event(site.name, "c-metrics"))
    before = client.get("/metrics").get_data(as_text=True)
    client.post("/webhooks/comments", data=body, headers=signed_headers(site.secret, body))
    client.post("/webhooks/comments", data=b"{", headers=signed_headers(site.secret, b"{"))
    after = client.get("/metrics").get_data(as_text=True)

    def value(text: str, prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))

    assert (
        value(after, 'moderation_intake_requests_total{status="202"}')
        == value(before, 'moderation_intake_requests_total{status="202"}') + 1
    )
    assert value(after, 'moderation_intake_requests_total{status="400"}') >= 1
    assert "moderation_outbox_backlog 1.0" in after
    assert 'moderation_queue_depth{queue="moderation"} 1.0' in after
    assert 'moderation_queue_depth{queue="callbacks"} 0.0' in after
    assert 'moderation_queue_depth{queue="training"} 0.0' in after
    assert 'moderation_callbacks{state="dead"} 0.0' in after


# --- a database the web cannot use: readiness says why, webhooks get a JSON 503, the log names the cause ---

ANY_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def post_comment(client: FlaskClient) -> TestResponse:
    body = encode(comment_event("backpain-advisor", f"c-{uuid.uuid4().hex[:8]}"))
    return client.post("/webhooks/comments", data=body, headers=signed_headers(ANY_SECRET, body))


def test_readiness_is_503_until_the_schema_is_migrated(empty_database_url: str, redis_url: str, tmp_path: Path) -> None:
    client = create_app(fast_settings(empty_database_url, redis_url, tmp_path / "var")).test_client()
    before = client.get("/readyz")
    assert before.status_code == 503
    assert before.get_json()["checks"] == {"database": True, "schema": False, "broker": True}

    upgrade_database(empty_database_url)
    after = client.get("/readyz")  # at once: a wrong schema is not remembered
    assert after.status_code == 200, after.get_json()
    assert after.get_json()["checks"] == {"database": True, "schema": True, "broker": True}


def test_readiness_is_503_on_a_schema_behind_this_code(redis_url: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade_database(url, "0004")
    ready = create_app(fast_settings(url, redis_url, tmp_path / "var")).test_client().get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["schema"] is False


def test_a_schema_ahead_of_this_code_stays_ready_for_a_rolling_upgrade(redis_url: str, tmp_path: Path) -> None:
    """Migrations run before the new version is everywhere: the previous version's web must stay in service."""
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    upgrade_database(url)
    engine = create_db_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    ready = create_app(fast_settings(url, redis_url, tmp_path / "var")).test_client().get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"]["schema"] is True


def test_a_webhook_on_an_unmigrated_database_is_a_json_503_and_the_log_says_migrate(
    empty_database_url: str, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = create_app(fast_settings(empty_database_url, redis_url, tmp_path / "var")).test_client()
    with caplog.at_level(logging.WARNING, logger="webhooks"):
        answers = [post_comment(client) for _ in range(3)]
    for answer in answers:
        assert answer.status_code == 503, answer.get_data(as_text=True)
        assert answer.get_json()["error"] == "unavailable"
        assert answer.headers["Retry-After"]
    [line] = [record.getMessage() for record in caplog.records if record.name == "webhooks"]  # one, not three
    assert "lacks a table or column this code needs" in line and "run `moderation migrate`" in line


def unreachable_url(backend: str, tmp_path: Path) -> tuple[str, str]:
    """A database URL that cannot be connected to, and what the driver says about it."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'no-such-folder' / 'moderation.db'}", "unable to open database file"
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    name = f"moderation_missing_{uuid.uuid4().hex[:8]}"
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False), (
        f'database "{name}" does not exist'
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_web_logs_why_the_database_is_unavailable_once_per_interval(
    backend: str, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, reason = unreachable_url(backend, tmp_path)
    client = create_app(fast_settings(url, redis_url, tmp_path / "var")).test_client()
    with caplog.at_level(logging.WARNING, logger="webhooks"):
        answers = [post_comment(client) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [503, 503, 503]
    lines = [record for record in caplog.records if record.name == "webhooks"]
    assert len(lines) == 1, [record.getMessage() for record in lines]  # no flood during an outage
    assert lines[0].levelno == logging.WARNING
    assert reason in lines[0].getMessage() and "\n" not in lines[0].getMessage()


def test_the_database_log_says_yes_once_per_interval() -> None:
    every = EveryFewSeconds(0.2)
    assert [every.due(), every.due()] == [True, False]
    time.sleep(0.25)
    assert every.due()


# --- a connection lost after the comment is stored: the site is told it was accepted, not a 500 ---


def test_a_stored_comment_is_accepted_even_if_the_requests_connection_dies_before_teardown(
    settings: Settings, site: SiteCredentials, engine: Engine
) -> None:
    """The request's session (it read the site) is closed at teardown; closing rolls back, and on a
    connection PostgreSQL has dropped meanwhile that fails. The comment was committed on another
    connection by then: the answer must say so, not be gunicorn's HTML 500."""
    if engine.dialect.name != "postgresql":
        pytest.skip("drops a PostgreSQL backend; SQLite has no server connection to lose")
    app = create_app(settings.model_copy(update={"site_cache_seconds": 0}))
    runtime = app.extensions["moderation"]
    published = runtime.publisher

    class DroppingPublisher:
        """Publishes, then has PostgreSQL end the request session's connection, as a restart would."""

        def classify(self, comment_id: int, revision: int | None = None) -> None:
            published.classify(comment_id, revision)
            pid = g.db_session.connection().connection.driver_connection.info.backend_pid
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

        def __getattr__(self, name: str) -> Any:
            return getattr(published, name)

    runtime.publisher = DroppingPublisher()
    body = encode(comment_event(site.name, "c-dropped"))
    pool = runtime.sessions.kw["bind"].pool
    try:
        answer = app.test_client().post("/webhooks/comments", data=body, headers=signed_headers(site.secret, body))
        assert pool.checkedout() == 0  # the dropped connection went back to be replaced, not leaked
    finally:
        runtime.sessions.kw["bind"].dispose()
    assert answer.status_code == 202, answer.get_data(as_text=True)
    with make_session_factory(engine)() as session:
        assert session.query(Comment).filter_by(external_id="c-dropped").count() == 1
