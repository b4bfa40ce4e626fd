"""The OpenAPI 3.1 document of the webhook, the pull API and the callback, served at /openapi.json."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal

from flask import Response, jsonify
from pydantic import BaseModel, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, GetPydanticSchema
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from models.entities import MAX_ROW_ID
from moderation.reasons import ALL_REASONS, REJECT_REASONS, ModeratorReason, Reason
from webhooks.api import MAX_PAGE
from webhooks.blueprint import bp
from webhooks.schemas import (
    MAX_ERASURE_IDS,
    CommentCreated,
    CommentDeleted,
    CommentEvent,
    CommentUpdated,
    ErasureRequest,
)
from webhooks.signatures import MAX_WEBHOOK_ID_LENGTH, USED_ID_SECONDS


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    error: str
    message: str
    fields: list[FieldError] | None = None


CommentStatusName = Literal["pending", "approved", "held", "rejected", "deleted"]


# A decision's reasons are one named schema, built from moderation.reasons: a site sees every value it can be
# sent, and a reason added there appears here by itself. Only the document changes: the JSON stays plain strings.
REASON_SCHEMA = "Reason"


def _reason_core_schema(_source: Any, _handler: GetCoreSchemaHandler) -> CoreSchema:
    # A ``ref`` makes pydantic emit one definition that both payloads' ``reasons`` point to.
    return core_schema.literal_schema(list(ALL_REASONS), ref=REASON_SCHEMA)


def _reason_json_schema(schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
    reference = handler(schema)
    handler.resolve_ref_schema(reference)["description"] = _reason_description()
    return reference


def _reason_description() -> str:
    moderators_own = ", ".join(f"`{reason}`" for reason in ModeratorReason)
    shared = " and ".join(f"`{reason}`" for reason in REJECT_REASONS if reason in set(Reason))
    return (
        "Why a comment was held or rejected (an approval has none). The policy's reasons come first (the "
        "policy table in the service's docs/architecture.md says when each is given), then those only a moderator "
        "gives, rejecting: "
        f"{moderators_own} (a moderator rejects with {shared} too, the same values as the policy's). A later "
        "version of the service may add values."
    )


ReasonValue = Annotated[str, GetPydanticSchema(_reason_core_schema, _reason_json_schema)]


class AcceptedBody(BaseModel):
    id: int
    status: CommentStatusName
    status_url: str


class DecisionScores(BaseModel):
    """The model's probabilities. A moderator's decision keeps those of the model's decision it replaced; both
    are null when there were none: a hold with the reason `not_classified` (the classifiers failed on the comment
    run after run, so a person decides) and a moderator's verdict on it."""

    spam: float | None
    medical_advice: float | None


class DecisionView(BaseModel):
    outcome: Literal["approve", "hold", "reject"]
    reasons: list[ReasonValue]
    scores: DecisionScores
    decided_by: Literal["model", "moderator"]
    model_version: str | None
    decided_at: str


class CommentView(BaseModel):
    id: int
    comment_id: str
    site: str
    article_id: str
    status: CommentStatusName
    received_at: str
    decision: DecisionView | None


class CommentList(BaseModel):
    comments: list[CommentView]
    next_after: int | None = Field(
        description=(
            "The `id` of the page's last comment when the page is full (as many comments as `limit`): pass it as "
            "`after` for the next page. `null` when the page has fewer. A full last page still has a `next_after`; "
            "the request after it returns an empty page with `next_after: null`."
        )
    )


class DecidedData(BaseModel):
    id: int = Field(
        description=(
            "The service's id of the comment, the `id` intake returned (and `GET /api/comments/{id}` takes); not "
            "the id of a decision. The site's own id is `comment_id`."
        )
    )
    comment_id: str
    site: str
    article_id: str
    status: Literal["approved", "held", "rejected"]
    decision: Literal["approve", "hold", "reject"]
    reasons: list[ReasonValue]
    scores: DecisionScores
    decided_by: Literal["model", "moderator"]
    model_version: str | None
    decided_at: str


class DecidedEvent(BaseModel):
    type: Literal["comment.decided", "comment.reviewed"]
    timestamp: str
    data: DecidedData


class ErasureResult(BaseModel):
    site: str
    comments_erased: int = Field(description="comments anonymized now (0 on a repeat)")
    list_entries_removed: int = Field(description="this site's block/allow-list entries for the e-mail, removed")
    all_sites_entries_kept: int = Field(
        description="entries for every site naming the e-mail, kept for an admin to remove (0 for `comment_ids`)"
    )


SCHEMAS: list[type[BaseModel]] = [
    CommentEvent,
    CommentCreated,
    CommentUpdated,
    CommentDeleted,
    ErrorBody,
    AcceptedBody,
    CommentView,
    CommentList,
    DecidedEvent,
    ErasureRequest,
    ErasureResult,
]

# What intake and the API both check of a webhook-id before its signature.
WEBHOOK_ID_RULES = (
    f"At most {MAX_WEBHOOK_ID_LENGTH} characters, none of them a control character; an id breaking either rule is "
    "a 401 `invalid_signature` whose message names the rule."
)

SIGNATURE_HEADERS = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "maxLength": MAX_WEBHOOK_ID_LENGTH, "pattern": r"^[^\x00-\x1f\x7f-\x9f]*$"},
        "description": (
            "Names one message: a retry of it carries the same id and the same body. A repeat of an accepted id "
            f"with the same body is answered 200 with the same comment; with another body, 409. {WEBHOOK_ID_RULES}"
        ),
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
        "description": "Unix seconds; must be within 5 minutes of the server's clock.",
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": "Space-separated `v1,<base64 HMAC-SHA256 of id.timestamp.body>` with the site's secret.",
    },
]


# The API's own webhook-id: its signature does not cover the method, path or query, so an id names one
# request (headers seen once must not open any other API URL); a retry of that same request may keep it.
API_REQUEST_ID = {
    **SIGNATURE_HEADERS[0],
    "description": (
        "A new id for every request; a retry of the same request (method, path, query and body) may keep it. "
        f"An id the site used in the last {USED_ID_SECONDS // 60} minutes for another request is refused with "
        f"401 `webhook_id_reused`. {WEBHOOK_ID_RULES}"
    ),
}
API_SIGNATURE_HEADERS = [API_REQUEST_ID, *SIGNATURE_HEADERS[1:]]
# A callback's id, as the site receives it.
CALLBACK_SIGNATURE_HEADERS = [
    {
        **SIGNATURE_HEADERS[0],
        "description": "Names one callback: each retry of it carries the same id, so the site can drop repeats.",
    },
    *SIGNATURE_HEADERS[1:],
]

RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def _json(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _site_param() -> dict[str, Any]:
    return {
        "name": "site",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "maxLength": 100},
        "description": "The site whose secret signed the request (over an empty body for a GET).",
    }


@cache
def openapi_document() -> dict[str, Any]:
    components: dict[str, Any] = {}
    for model in SCHEMAS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    signed_api_errors = {
        "401": _error(
            "Unknown site or bad, stale or missing signature (`invalid_signature`), or a webhook-id already used "
            "for another request (`webhook_id_reused`)."
        ),
        "503": _error("The database is unavailable; retry after Retry-After.", RETRY_AFTER),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Comment moderation service",
            "version": "1.0.0",
            "description": "Signed comment intake, decisions by callback and by pull API.",
        },
        "paths": {
            "/webhooks/comments": {
                "post": {
                    "operationId": "receiveComment",
                    "summary": "Submit a new, edited or deleted comment for moderation (Standard Webhooks signed).",
                    "description": (
                        "`comment.created`, `comment.updated` (the whole comment plus `updated_at`) and "
                        "`comment.deleted`. Deliveries may arrive in any order: the site's timestamps decide. An "
                        "update that arrives first stores the comment; an event older than the stored version "
                        "is acknowledged (200) and changes nothing; a delete is final. A new body is classified "
                        "again and its decision is sent as `comment.decided`, also when the outcome stayed the "
                        "same."
                    ),
                    "parameters": SIGNATURE_HEADERS,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CommentEvent"}}},
                    },
                    "responses": {
                        "202": _json(
                            "Accepted: stored and queued for classification (new comment or new body).", "AcceptedBody"
                        ),
                        "200": _json(
                            "Acknowledged, nothing to classify: a repeated delivery (same webhook-id and body, or "
                            "a create of a stored site comment id with the same body and article), a stale or "
                            "metadata-only update, or a deletion (status `deleted`).",
                            "AcceptedBody",
                        ),
                        "400": _error("Bad JSON or invalid fields; `fields` names each one."),
                        "401": _error("Unknown site or bad, stale or missing signature."),
                        "409": _error(
                            "`webhook_id_reused`: this webhook-id was already accepted with a different body (the "
                            "message names that comment's id). Nothing is stored; send the event under its own id. "
                            "`comment_id_reused`: a `comment.created` for a stored comment id with another body or "
                            "article. Nothing is stored; send an edit as `comment.updated`, a new comment under its "
                            "own comment id."
                        ),
                        "413": _error("Body over 384 KiB (`MAX_BODY_BYTES`)."),
                        "415": _error("Not application/json."),
                        "429": _error("Rate limited; see Retry-After.", RETRY_AFTER),
                        "503": _error("The database cannot take it; retry after Retry-After.", RETRY_AFTER),
                    },
                }
            },
            "/api/comments/{id}": {
                "get": {
                    "operationId": "getComment",
                    "summary": "A comment's status and current decision.",
                    "description": (
                        "To find a comment by the site's own `comment_id`, list with `?comment_id=`. The only query "
                        "parameter is `site`: any other one, or `site` given twice, is a 400 `invalid_query`."
                    ),
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer"},
                            "description": "The service's id, as returned by intake (`id`).",
                        },
                        _site_param(),
                        *API_SIGNATURE_HEADERS,
                    ],
                    "responses": {
                        "200": _json("The comment.", "CommentView"),
                        "400": _error(
                            "A query parameter other than `site`, or one given twice (`invalid_query`; `fields` "
                            "names each), or a body on a GET (`invalid_request`): sign a GET over an empty body."
                        ),
                        "404": _error("No such comment for this site."),
                        **signed_api_errors,
                    },
                }
            },
            "/api/comments": {
                "get": {
                    "operationId": "listComments",
                    "summary": "A site's comments, filtered by article, status and site comment id, paged by id.",
                    "description": (
                        "Comments in id order, at most `limit` of them, with ids above `after`. Page with "
                        "`next_after`: while it is not null, send it as `after`. A full page always has a "
                        "`next_after`, the last page too when it is full; the request after it returns an empty "
                        "page with `next_after: null`. A query parameter not listed here (a misspelt filter such "
                        "as `state` or `article_id`), or one given twice, is a 400 `invalid_query`, never ignored."
                    ),
                    "parameters": [
                        _site_param(),
                        {
                            "name": "article",
                            "in": "query",
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                        },
                        {
                            "name": "comment_id",
                            "in": "query",
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                            "description": "The site's own comment id, as sent at intake: exact match.",
                        },
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"enum": ["pending", "approved", "held", "rejected", "deleted"]},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                        },
                        {
                            "name": "after",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ROW_ID},
                        },
                        *API_SIGNATURE_HEADERS,
                    ],
                    "responses": {
                        "200": _json("A page of comments.", "CommentList"),
                        "400": _error(
                            "Invalid, unknown or repeated query parameter(s) (`invalid_query`; `fields` names each "
                            "bad one), or a body on a GET (`invalid_request`)."
                        ),
                        **signed_api_errors,
                    },
                }
            },
            "/api/authors/erase": {
                "post": {
                    "operationId": "eraseAuthor",
                    "summary": "Erase an author's personal data (name, e-mail, URL, IP, user agent) on this site.",
                    "description": (
                        "Signed like the other API calls, over the JSON body, which holds exactly one of `email` "
                        "and `comment_ids` (both, or neither, is a 400 `invalid_payload`). With `email`: every "
                        "comment of the site whose author e-mail matches (ignoring case) is anonymized, with the "
                        "values scrubbed from decisions, callbacks and notes, and the site's block/allow-list entries "
                        "for that e-mail removed; entries for all sites naming it are kept (any site can send a "
                        "comment under any address) and counted in `all_sites_entries_kept`, for an admin to "
                        "remove on the dashboard's lists page. With `comment_ids` (the site's "
                        f"own ids, as sent at intake; 1 to {MAX_ERASURE_IDS}): those comments are anonymized and "
                        "scrubbed the same way, comments sent without an e-mail included; other comments of the "
                        "same author are not looked for and no list entry is removed. Ids the site does not have "
                        "count 0. Decisions and their statistics stay. Idempotent: a repeat erases 0. The only "
                        "query parameter is `site`: any other one, or `site` given twice, is a 400 `invalid_query`."
                    ),
                    "parameters": [_site_param(), *API_SIGNATURE_HEADERS],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErasureRequest"}}},
                    },
                    "responses": {
                        "200": _json("Erased; the counts say how much.", "ErasureResult"),
                        "400": _error(
                            "Not JSON (`invalid_json`), invalid fields (`invalid_payload`; `fields` names each), or a "
                            "query parameter other than `site`, or one given twice (`invalid_query`)."
                        ),
                        "413": _error("Body over 384 KiB (`MAX_BODY_BYTES`)."),
                        "415": _error("Not application/json."),
                        **signed_api_errors,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "The process is alive.",
                    "responses": {"200": {"description": "Alive."}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Database reachable with its schema at this code's migration, and broker reachable.",
                    "responses": {
                        "200": {"description": "Ready."},
                        "503": {"description": "A dependency is unreachable."},
                    },
                }
            },
        },
        "webhooks": {
            "commentDecided": {
                "post": {
                    "summary": "Sent to the site's callback URL after each decision, signed with the site's secret.",
                    "description": (
                        "`comment.decided` after the model decides, and again after each edit with a new body "
                        "once the new text is classified, also when the outcome stayed the same (intake answered "
                        "`pending` for the edit); `comment.reviewed` after a moderator's verdict. Never sent for a "
                        "comment the site deleted. Order by `decided_at`. During a secret rotation's overlap "
                        "`webhook-signature` carries one signature per secret still accepted, newest first, so the "
                        "old secret and the new one both verify it."
                    ),
                    "parameters": CALLBACK_SIGNATURE_HEADERS,
                    "requestBody": {
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DecidedEvent"}}}
                    },
                    "responses": {
                        "2XX": {"description": "Received."},
                        "410": {"description": "Disables the callback endpoint."},
                        "429": {"description": "Retried no sooner than Retry-After.", "headers": RETRY_AFTER},
                    },
                }
            },
        },
        "components": {"schemas": components},
    }


@bp.get("/openapi.json")
def serve_openapi() -> Response:
    return jsonify(openapi_document())
