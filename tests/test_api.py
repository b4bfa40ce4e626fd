"""The pull API (signed per site), the served OpenAPI document, and the health endpoints."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from sqlalchemy import Engine

from models.db import make_session_factory
from models.entities import Comment
from moderation.sites import create_site
from tests.conftest import SiteCredentials
from tests.support.signing import comment_event, encode, signed_headers


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
        rule.rule.replace("<int:comment_id>", "{comment_id}")
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


@pytest.mark.parametrize("query", ["status=published", "limit=ten", "after=x"])
def test_list_rejects_bad_query_parameters(client: FlaskClient, site: SiteCredentials, query: str) -> None:
    response = client.get(f"/api/comments?site={site.name}&{query}", headers=signed_headers(site.secret, b""))
    assert response.status_code == 400


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {"database": True, "broker": True}


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
    assert 'moderation_callbacks{state="dead"} 0.0' in after
