"""The pull API: a site asks for its comments' decisions, signing each request like a webhook."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Response, jsonify, request
from pydantic import ValidationError
from sqlalchemy import select

from models.entities import Comment, CommentStatus, Site
from moderation.decisions import current_decision
from moderation.privacy import erase_author
from moderation.sites import SITE_NAME_RE, get_site
from webhooks.blueprint import bp
from webhooks.context import db
from webhooks.responses import error_response
from webhooks.schemas import ErasureRequest, field_errors
from webhooks.signatures import SignatureError, lower_headers, verify_signature

MAX_PAGE = 500
MAX_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL


def _authenticated_site() -> Site | Response:
    name = request.args.get("site", "")
    site = get_site(db(), name) if SITE_NAME_RE.fullmatch(name) else None
    if site is None:
        return error_response(401, "invalid_signature", "name a site with ?site= and sign the request with its secret")
    try:
        verify_signature(request.get_data(cache=True), lower_headers(), site.usable_secrets(datetime.now(UTC)))
    except SignatureError as error:
        return error_response(401, "invalid_signature", f"the signature does not verify: {error}")
    return site


def comment_view(comment: Comment, site: Site) -> dict[str, Any]:
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
    comment = db().get(Comment, comment_id) if 0 < comment_id <= MAX_ID else None
    if comment is None or comment.site_id != site.id:
        return error_response(404, "not_found", f"site {site.name} has no comment {comment_id}")
    return jsonify(comment_view(comment, site))


@bp.get("/api/comments")
def list_comments() -> Response | tuple[Response, int]:
    site = _authenticated_site()
    if isinstance(site, Response):
        return site
    status = request.args.get("status")
    if status is not None and status not in set(CommentStatus):
        return error_response(
            400,
            "invalid_query",
            "unknown status",
            [{"field": "status", "message": f"one of {', '.join(CommentStatus)}"}],
        )
    try:
        limit = min(MAX_PAGE, max(1, int(request.args.get("limit", "100"))))
        after = int(request.args.get("after", "0"))
    except ValueError:
        return error_response(
            400,
            "invalid_query",
            "limit and after must be integers",
            [{"field": "limit", "message": "integer"}, {"field": "after", "message": "integer"}],
        )
    article = request.args.get("article")
    if not 0 <= after <= MAX_ID:
        return error_response(
            400, "invalid_query", "after is out of range", [{"field": "after", "message": f"between 0 and {MAX_ID}"}]
        )
    if article is not None and (len(article) > 200 or "\x00" in article):
        return error_response(
            400,
            "invalid_query",
            "article is not an article id",
            [{"field": "article", "message": "at most 200 characters, no NUL"}],
        )
    query = select(Comment).where(Comment.site_id == site.id, Comment.id > after)
    if article:
        query = query.where(Comment.article_id == article)
    if status:
        query = query.where(Comment.status == status)
    comments = list(db().scalars(query.order_by(Comment.id).limit(limit)))
    return jsonify(
        {
            "comments": [comment_view(c, site) for c in comments],
            "next_after": comments[-1].id if len(comments) == limit else None,
        }
    )


@bp.post("/api/authors/erase")
def erase_author_data() -> Response | tuple[Response, int]:
    """Erase one author's personal data on the signing site: the API twin of ``moderation authors erase``."""
    site = _authenticated_site()
    if isinstance(site, Response):
        return site
    if request.mimetype != "application/json":
        return error_response(415, "unsupported_media_type", 'send {"email": ...} as application/json')
    try:
        wanted = ErasureRequest.model_validate_json(request.get_data(cache=True))
    except ValidationError as error:
        return error_response(400, "invalid_payload", "the body has invalid fields", field_errors(error))
    session = db()
    erased = erase_author(session, site, wanted.email, datetime.now(UTC))
    session.commit()
    return jsonify({"site": site.name, "comments_erased": erased.comments, "list_entries_removed": erased.list_entries})
