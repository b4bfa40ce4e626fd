"""The pull API: a site asks for its comments' decisions, signing each request like a webhook."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Response, current_app, jsonify, request
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.entities import MAX_ROW_ID, Comment, CommentStatus
from moderation.decisions import current_decision
from moderation.privacy import Erasure, erase_author, erase_comments_of_site
from moderation.sites import SiteKeyCache, SiteKeys
from webhooks.blueprint import bp
from webhooks.context import db
from webhooks.responses import error_response
from webhooks.schemas import MAX_ID_CHARS, ErasureRequest, field_errors
from webhooks.signatures import (
    SignatureError,
    UsedRequestIds,
    lower_headers,
    refusal_message,
    signed_by_site,
)

log = logging.getLogger(__name__)

MAX_PAGE = 500
FieldErrors = list[dict[str, str]]

# The query parameters each endpoint reads. Any other one, or one of these given twice, is refused: a
# misspelt filter (``state=approved``, ``article_id=x``) would otherwise be ignored and the listing would
# include comments the site must not publish.
COMMENT_PARAMS = ("site",)
LIST_PARAMS = ("site", "article", "status", "comment_id", "limit", "after")
ERASE_PARAMS = ("site",)


def _authenticated_site() -> SiteKeys | Response:
    name = request.args.get("site", "")
    if not name:
        return error_response(401, "invalid_signature", "name a site with ?site= and sign the request with its secret")
    body = request.get_data(cache=True)
    if request.method in ("GET", "HEAD") and body:
        # A GET is signed over an empty body. With one, any message the site's secret signed (a callback, a
        # webhook delivery) would verify here and open the API.
        return error_response(400, "invalid_request", "a GET request has no body: sign it over an empty body")
    sites: SiteKeyCache = current_app.extensions["site_keys"]
    try:
        site, webhook_id = signed_by_site(sites, db(), name, body, lower_headers())
    except SignatureError as error:
        return error_response(401, "invalid_signature", refusal_message(error))
    # Checked only once the signature verifies, so unsigned requests cannot fill the store.
    if not _used_request_ids().claim(site.name, webhook_id, request.method, request.full_path, body):
        return error_response(
            401,
            "webhook_id_reused",
            "webhook-id already used for another request: each API request needs its own id (a retry of the "
            "same request may keep it)",
        )
    return site


def _query_errors(allowed: tuple[str, ...]) -> FieldErrors:
    """One error for each query parameter the endpoint does not read, and for each one given more than once."""
    errors: FieldErrors = []
    for name in request.args:  # each name once, in the order it first appears
        if name not in allowed:
            errors.append({"field": name, "message": f"unknown parameter: one of {', '.join(allowed)}"})
        elif len(request.args.getlist(name)) > 1:
            errors.append({"field": name, "message": "given more than once: give it once"})
    return errors


def _invalid_query(errors: FieldErrors) -> Response:
    names = ", ".join(error["field"] for error in errors)
    return error_response(400, "invalid_query", f"invalid query parameter(s): {names}", errors)


def _used_request_ids() -> UsedRequestIds:
    store: UsedRequestIds = current_app.extensions["api_request_ids"]  # made by the app factory
    return store


def comment_view(comment: Comment, site: SiteKeys) -> dict[str, Any]:
    decision = current_decision(db(), comment.id)
    return {
        "id": comment.id,
        "comment_id": comment.external_id,
        "site": site.name,
        "article_id": comment.article_id,
        "status": comment.status,
        "received_at": comment.received_at.isoformat(),
        "decision": None
        if decision is None
        else {
            "outcome": decision.outcome,
            "reasons": list(decision.reasons),
            "scores": {"spam": decision.spam_score, "medical_advice": decision.advice_score},
            "decided_by": "model" if decision.by_model else "moderator",
            "model_version": decision.model_version,
            "decided_at": decision.created_at.isoformat(),
        },
    }


@bp.get("/api/comments/<int:comment_id>")
def get_comment(comment_id: int) -> Response | tuple[Response, int]:
    site = _authenticated_site()
    if isinstance(site, Response):
        return site
    # After the signature check, as every check of the query is: an unsigned request is a 401 whatever it asks.
    errors = _query_errors(COMMENT_PARAMS)
    if errors:
        return _invalid_query(errors)
    comment = db().get(Comment, comment_id) if 0 < comment_id <= MAX_ROW_ID else None
    if comment is None or comment.site_id != site.id:
        return error_response(404, "not_found", f"site {site.name} has no comment {comment_id}")
    return jsonify(comment_view(comment, site))


@dataclass(frozen=True, slots=True)
class ListQuery:
    limit: int
    after: int
    status: str | None
    article: str | None
    comment_id: str | None


@bp.get("/api/comments")
def list_comments() -> Response | tuple[Response, int]:
    site = _authenticated_site()
    if isinstance(site, Response):
        return site
    wanted = _list_query()
    if not isinstance(wanted, ListQuery):
        return _invalid_query(wanted)
    query = select(Comment).where(Comment.site_id == site.id, Comment.id > wanted.after)
    if wanted.article:
        query = query.where(Comment.article_id == wanted.article)
    if wanted.status:
        query = query.where(Comment.status == wanted.status)
    if wanted.comment_id is not None:
        query = query.where(Comment.external_id == wanted.comment_id)
    comments = list(db().scalars(query.order_by(Comment.id).limit(wanted.limit)))
    return jsonify(
        {
            "comments": [comment_view(c, site) for c in comments],
            "next_after": comments[-1].id if len(comments) == wanted.limit else None,
        }
    )


def _list_query() -> ListQuery | FieldErrors:
    """The listing's filters, or one error for each bad parameter (and none for the good ones).

    An unknown or repeated parameter is one error; a repeated one's values are not checked besides."""
    errors = _query_errors(LIST_PARAMS)
    refused = {error["field"] for error in errors}
    given = {name: request.args[name] for name in LIST_PARAMS if name in request.args and name not in refused}
    status = given.get("status")
    if status is not None and status not in set(CommentStatus):
        errors.append({"field": "status", "message": f"one of {', '.join(CommentStatus)}"})
    wanted = ListQuery(
        limit=_integer_param(given, "limit", 100, 1, MAX_PAGE, errors),
        after=_integer_param(given, "after", 0, 0, MAX_ROW_ID, errors),
        status=status,
        article=_text_param(given, "article", errors),
        comment_id=_text_param(given, "comment_id", errors),
    )
    return errors or wanted


def _integer_param(given: dict[str, str], name: str, default: int, low: int, high: int, errors: FieldErrors) -> int:
    raw = given.get(name)
    if raw is None:
        return default
    try:
        value: int | None = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        errors.append({"field": name, "message": f"an integer between {low} and {high}"})
        return default
    return value


def _text_param(given: dict[str, str], name: str, errors: FieldErrors) -> str | None:
    value = given.get(name)
    # PostgreSQL text cannot hold NUL; nothing longer was ever stored.
    if value is not None and (len(value) > MAX_ID_CHARS or "\x00" in value):
        errors.append({"field": name, "message": f"at most {MAX_ID_CHARS} characters, no NUL"})
    elif value == "":  # matches no comment's id: a link built from a missing value, not "any"
        errors.append({"field": name, "message": "must not be empty: leave the parameter out to list every one"})
    return value


@bp.post("/api/authors/erase")
def erase_author_data() -> Response | tuple[Response, int]:
    """Erase personal data on the signing site, the API twin of ``moderation authors erase``."""
    site = _authenticated_site()
    if isinstance(site, Response):
        return site
    errors = _query_errors(ERASE_PARAMS)
    if errors:
        return _invalid_query(errors)
    if request.mimetype != "application/json":
        return error_response(
            415, "unsupported_media_type", 'send {"email": ...} or {"comment_ids": [...]} as application/json'
        )
    document = _json_body()
    if isinstance(document, Response):
        return document
    try:
        wanted = ErasureRequest.model_validate(document)
    except ValidationError as error:
        return error_response(400, "invalid_payload", "the body has invalid fields", field_errors(error))
    session = db()
    erased = _erase(session, site, wanted)
    session.commit()
    _log_kept_entries(site, erased)
    return jsonify(
        {
            "site": site.name,
            "comments_erased": erased.comments,
            "list_entries_removed": erased.list_entries,
            "all_sites_entries_kept": erased.all_sites_entries_kept,
        }
    )


def _log_kept_entries(site: SiteKeys, erased: Erasure) -> None:
    """For the admin, who alone can remove them (the answer only counts them): the entries by id, never the address."""
    if erased.kept_entry_ids:
        log.warning(
            "an erasure for site %s kept all-sites list entries naming the author (ids %s): remove them on the "
            "lists page if the erasure covers them",
            site.name,
            ", ".join(map(str, erased.kept_entry_ids)),
        )


def _erase(session: Session, site: SiteKeys, wanted: ErasureRequest) -> Erasure:
    now = datetime.now(UTC)
    if wanted.comment_ids is not None:
        return erase_comments_of_site(session, site, wanted.comment_ids, now)
    assert wanted.email is not None  # ErasureRequest holds exactly one of the two
    return erase_author(session, site, wanted.email, now)


def _json_body() -> Any | Response:
    """The parsed JSON body, or the webhook's own answer to a body that is not JSON (``invalid_json``)."""
    try:
        # The signature check has already refused a body that is not UTF-8.
        return json.loads(request.get_data(cache=True).decode("utf-8"))
    except (ValueError, RecursionError) as error:
        return error_response(400, "invalid_json", f"the body is not valid JSON: {error}"[:300])
