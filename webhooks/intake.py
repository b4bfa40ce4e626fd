"""``POST /webhooks/comments``: verify, validate, dedupe, store with the outbox row, then publish."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from flask import Response, current_app, g, jsonify, request, url_for
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.entities import CommentStatus
from moderation.intake import (
    Accepted,
    CommentIdReusedError,
    WebhookIdReusedError,
    accept_comment,
    insert_new_comment,
    repeated_delivery,
)
from moderation.lifecycle import apply_delete, apply_update
from moderation.metrics import INTAKE_REQUESTS, INTAKE_SECONDS
from moderation.sites import SiteKeyCache, SiteKeys
from webhooks.blueprint import bp
from webhooks.context import db, runtime
from webhooks.ratelimit import IntakeLimits
from webhooks.responses import error_response
from webhooks.schemas import CommentCreated, CommentDeleted, CommentEvent, CommentUpdated, field_errors
from webhooks.signatures import (
    SignatureError,
    lower_headers,
    refusal_message,
    signed_by_site,
)

log = logging.getLogger(__name__)
STORE_ATTEMPTS = 4
Event = CommentCreated | CommentUpdated | CommentDeleted


class IntakeError(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


@bp.after_request
def count_intake(response: Response) -> Response:
    if request.endpoint == "webhooks.receive_comment":
        INTAKE_REQUESTS.labels(status=str(response.status_code)).inc()
        started = g.get("intake_started")
        if started is not None:
            INTAKE_SECONDS.observe(time.perf_counter() - started)
    return response


@bp.post("/webhooks/comments")
def receive_comment() -> Response | tuple[Response, int]:
    g.intake_started = time.perf_counter()
    try:
        document = _json_document()
        site = _signed_by_site(document)
        event = _validated(document)
        webhook_id = request.headers["webhook-id"]  # present: the signature check above requires it
        payload_sha256 = _payload_sha256(document)
        _within_rate_limits(site, event, webhook_id, payload_sha256)
        accepted = _store(site, webhook_id, payload_sha256, event)
    except IntakeError as rejected:
        return rejected.response
    published = accepted.queued and _publish(accepted.comment_id, accepted.revision, webhook_id)
    log.info(
        "comment accepted",
        extra={
            "comment_id": accepted.comment_id,
            "webhook_id": webhook_id,
            "event": event.type,
            "new_comment": accepted.created,
            "queued": accepted.queued,  # stored with its outbox row: it will be classified
            "published": published,  # sent to the broker now (else the outbox relay sends it)
        },
    )
    body = {
        "id": accepted.comment_id,
        "status": accepted.status,
        "status_url": status_url(accepted.comment_id, site.name),
    }
    return jsonify(body), 202 if accepted.queued else 200


def status_url(comment_id: int, site_name: str) -> str:
    public: str | None = current_app.config.get("PUBLIC_URL")
    if public:
        return public.rstrip("/") + url_for("webhooks.get_comment", comment_id=comment_id, site=site_name)
    return url_for("webhooks.get_comment", comment_id=comment_id, site=site_name, _external=True)


def _json_document() -> dict[str, Any]:
    if request.mimetype != "application/json":
        raise IntakeError(error_response(415, "unsupported_media_type", "send the comment as application/json"))
    raw = request.get_data(cache=True)  # over MAX_CONTENT_LENGTH, 413 (chunked: server.factory.read_streamed_body)
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise IntakeError(error_response(400, "invalid_json", "the body is not valid UTF-8")) from None
    except (ValueError, RecursionError) as error:
        raise IntakeError(error_response(400, "invalid_json", f"the body is not valid JSON: {error}"[:300])) from None
    if not isinstance(document, dict):
        raise IntakeError(
            error_response(
                400,
                "invalid_payload",
                "the body must be a JSON object",
                [{"field": "(body)", "message": "must be an object"}],
            )
        )
    return document


def _signed_by_site(document: dict[str, Any]) -> SiteKeys:
    """The site named in the body, once its secret has verified the raw bytes (nothing else is trusted)."""
    data = document.get("data")
    if not isinstance(data, dict):  # "data": "hi", [] or absent: say what is wrong with it, not with data.site
        raise IntakeError(
            error_response(
                400,
                "invalid_payload",
                "the payload's data must be a JSON object naming its site",
                [{"field": "data", "message": "must be an object" if "data" in document else "is required"}],
            )
        )
    site_name = data.get("site")
    if not isinstance(site_name, str) or not site_name:
        raise IntakeError(
            error_response(
                400,
                "invalid_payload",
                "the payload must name its site",
                [{"field": "data.site", "message": "a site name is required"}],
            )
        )
    sites: SiteKeyCache = current_app.extensions["site_keys"]
    try:
        site, _webhook_id = signed_by_site(sites, db(), site_name, request.get_data(cache=True), lower_headers())
    except SignatureError as error:
        raise _unauthorized(error) from None
    return site


def _unauthorized(error: SignatureError) -> IntakeError:
    """The 401 for a request its site did not sign, or signed with a timestamp off the server's clock."""
    message = refusal_message(error, whose=" for the site named in the payload")
    return IntakeError(error_response(401, "invalid_signature", message))


def _validated(document: dict[str, Any]) -> Event:
    try:
        return CommentEvent.model_validate(document).root
    except ValidationError as error:
        raise IntakeError(
            error_response(400, "invalid_payload", "the payload has invalid fields", field_errors(error))
        ) from None


def _within_rate_limits(site: SiteKeys, event: Event, webhook_id: str, payload_sha256: str) -> None:
    """429 over a limit, except for a repeat of a delivery already accepted: it is answered as a repeat.

    A site retries a delivery it did not see answered, and the retry is counted like any request; once
    over the limit, it is still the message already stored, and 200 tells the site to stop sending it. The
    database is asked only when a limit refuses, so a request within the limits costs what it did.
    """
    limits: IntakeLimits | None = current_app.extensions.get("intake_limits")
    author_ip = None if isinstance(event, CommentDeleted) else event.data.author.ip
    limited = limits.check(site.name, author_ip) if limits else None
    if limited is not None and not _accepted_before(site, webhook_id, payload_sha256):
        raise IntakeError(
            error_response(
                429,
                "rate_limited",
                f"too many comments for this {limited.scope.replace('_', ' ')}",
                headers={"Retry-After": str(limited.retry_after)},
            )
        )


def _accepted_before(site: SiteKeys, webhook_id: str, payload_sha256: str) -> bool:
    """Whether this webhook-id was already accepted with this payload (the same id with another is not)."""
    session = db()
    try:
        return repeated_delivery(session, site.id, webhook_id, payload_sha256) is not None
    except WebhookIdReusedError:
        return False
    finally:
        session.rollback()  # ends the read (on SQLite it holds the write lock); the store begins anew


def _payload_sha256(document: dict[str, Any]) -> str:
    """What tells a sender's retry of a message (the same JSON, re-signed) from another message.

    Of the parsed document with its keys sorted, so that a sender that encodes the JSON again for a retry
    (another key order or spacing) still sends the same message. The envelope's ``timestamp`` is ignored
    here as everywhere: a sender that stamps each attempt anew still sends the same message.
    """
    message = {key: value for key, value in document.items() if key != "timestamp"}
    canonical = json.dumps(message, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _store(site: SiteKeys, webhook_id: str, payload_sha256: str, event: Event) -> Accepted:
    """Commit the comment and its outbox row; a racing duplicate loses on a unique key and is retried.

    A new comment is first written in one statement; anything already known (a repeat, an earlier update
    or delete of it) takes the careful path. Each retry there reads again and finds what the winner
    committed. A delivery can lose twice (first on the comment, then on the receipt of a replayed
    webhook-id sent by several clients at once), hence a few tries. When what the winner committed under
    this webhook-id is another payload, the delivery is refused with 409 and nothing of it is written; so
    is a create whose comment id is stored with another body or article.
    """
    session = db()
    if isinstance(event, CommentCreated):
        # The fast path autocommits on its own connection: only with the app's Engine-bound session. A
        # session bound to a Connection lives inside a caller's transaction and takes the careful path.
        engine = session.get_bind()
        new = event.data.as_new_comment()
        comment_id = (
            insert_new_comment(engine, site.id, webhook_id, new, datetime.now(UTC), payload_sha256=payload_sha256)
            if isinstance(engine, Engine)
            else None
        )
        if comment_id is not None:
            return Accepted(comment_id, CommentStatus.PENDING, created=True, queued=True, revision=0)
    for attempt in range(1, STORE_ATTEMPTS + 1):
        try:
            accepted = _apply_event(session, site, webhook_id, payload_sha256, event, datetime.now(UTC))
            session.commit()
            return accepted
        except IntegrityError:
            session.rollback()
            if attempt == STORE_ATTEMPTS:
                raise
        except WebhookIdReusedError as reused:
            session.rollback()  # ends the transaction now (on SQLite it holds the write lock)
            raise IntakeError(_reused_response(reused)) from None
        except CommentIdReusedError as reused_comment_id:
            session.rollback()
            raise IntakeError(_comment_id_reused_response(reused_comment_id)) from None
    raise AssertionError("unreachable")


def _apply_event(
    session: Session, site: SiteKeys, webhook_id: str, payload_sha256: str, event: Event, now: datetime
) -> Accepted:
    if isinstance(event, CommentDeleted):
        data = event.data
        return apply_delete(session, site, webhook_id, data.comment_id, data.deleted_at, now, payload_sha256)
    if isinstance(event, CommentUpdated):
        return apply_update(session, site, webhook_id, event.data.as_new_comment(), now, payload_sha256)
    return accept_comment(session, site, webhook_id, event.data.as_new_comment(), now, payload_sha256)


def _reused_response(reused: WebhookIdReusedError) -> Response:
    log.warning(
        "webhook-id reused for a different payload; refused",
        extra={"comment_id": reused.comment_id, "webhook_id": reused.webhook_id},
    )
    return error_response(
        409,
        "webhook_id_reused",
        f"this webhook-id was already used for a different payload (comment {reused.comment_id}); a retry must "
        "resend the same body, and each new event needs its own webhook-id",
    )


def _comment_id_reused_response(reused: CommentIdReusedError) -> Response:
    log.warning(
        "comment.created for a stored comment id describing another comment; refused",
        extra={"comment_id": reused.comment_id, "external_id": reused.external_id, "differs": list(reused.differs)},
    )
    return error_response(
        409,
        "comment_id_reused",
        f"comment_id {json.dumps(reused.external_id)} is already stored (comment {reused.comment_id}) with a "
        f"different {_what_differs(reused)}; send an edit as comment.updated (with updated_at), and give each "
        "new comment its own comment_id",
    )


def _what_differs(reused: CommentIdReusedError) -> str:
    """What the create differs in: its body, its article id, both, or the creation time of a comment edited since."""
    if reused.differs != ("created_at",):
        return " and ".join(reused.differs)
    stored = reused.stored_created_at
    when = stored.astimezone(UTC).isoformat().replace("+00:00", "Z") if stored else "another time"
    return f"created_at (stored: {when}; the comment has been edited since, so its body is not compared)"


def _publish(comment_id: int, revision: int | None, webhook_id: str) -> bool:
    """Whether the classify task reached the broker. After commit only: if the broker is down the outbox
    relay publishes it later."""
    try:
        runtime().publisher.classify(comment_id, revision)
    except Exception:  # the broker's failure modes are many; the outbox row covers them all
        log.warning(
            "publish failed; the outbox relay will retry",
            extra={"comment_id": comment_id, "webhook_id": webhook_id},
            exc_info=True,
        )
        return False
    return True
