"""Helpers for dashboard tests: moderators, held comments and a signed-in test client."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from models.entities import CallbackDelivery, Comment, Decision, Site
from moderation.accounts import create_moderator
from moderation.intake import body_fingerprint

PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def add_moderator(session: Session, email: str, role: str = "moderator") -> int:
    return create_moderator(session, email, PASSWORD, role, datetime.now(UTC)).id


def held_comment(
    session: Session,
    site: Site,
    external_id: str,
    body: str = "That's sciatica. Take 800mg ibuprofen every 6 hours.",
    *,
    spam: float = 0.05,
    advice: float = 0.93,
    reasons: list[str] | None = None,
    age: timedelta = timedelta(minutes=5),
    **fields: Any,
) -> tuple[int, int]:
    """A comment the model held, with its decision: (comment id, decision id)."""
    now = datetime.now(UTC)
    comment = Comment(
        site_id=site.id,
        external_id=external_id,
        article_id=fields.pop("article_id", "massage-therapy"),
        article_url=fields.pop("article_url", "https://example.org/massage-therapy.html"),
        article_title=fields.pop("article_title", "Does Massage Therapy Really Help Back Pain?"),
        author_name=fields.pop("author_name", "Jan"),
        author_email=fields.pop("author_email", "jan@example.org"),
        author_url=fields.pop("author_url", ""),
        author_ip=fields.pop("author_ip", "203.0.113.9"),
        body=body,
        body_fingerprint=body_fingerprint(body),
        received_at=now - age,
        status="held",
        **fields,
    )
    session.add(comment)
    session.flush()
    decision = Decision(
        comment_id=comment.id,
        outcome="hold",
        is_current=True,
        spam_score=spam,
        advice_score=advice,
        reasons=reasons if reasons is not None else ["medical_advice"],
        explanation={"spam": [], "medical_advice": [{"feature": "ibuprofen", "weight": 1.2}]},
        model_version="test-model",
        decided_by="model",
        created_at=now - age,
    )
    session.add(decision)
    session.flush()
    return comment.id, decision.id


def callback_row(
    session: Session, site_id: int, comment_id: int, decision_id: int, status: str, message_id: str, **columns: Any
) -> int:
    """A model decision's callback in ``status``, with any other ``columns`` given; its id."""
    delivery = CallbackDelivery(
        site_id=site_id,
        comment_id=comment_id,
        decision_id=decision_id,
        event="comment.decided",
        message_id=message_id,
        payload={},
        status=status,
        **columns,
    )
    session.add(delivery)
    session.flush()
    return delivery.id


def dead_callback(session: Session, site_id: int, comment_id: int, decision_id: int) -> int:
    """A callback that failed for good: what the admin's dead-letter page lists and replays."""
    return callback_row(
        session, site_id, comment_id, decision_id, "dead", "msg_dead", attempts=12, last_status_code=500
    )


def csrf_token(client: FlaskClient, path: str = "/dashboard/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = CSRF_RE.search(page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(client: FlaskClient, email: str, password: str = PASSWORD) -> Any:
    token = csrf_token(client)
    return client.post("/dashboard/login", data={"email": email, "password": password, "csrf_token": token})


def act(client: FlaskClient, comment_id: int, action: str, expected: int | None, **extra: str) -> Any:
    token = csrf_token(client, "/dashboard/queue")
    data = {"csrf_token": token, "action": action, "expected_decision_id": str(expected or ""), **extra}
    return client.post(f"/dashboard/comments/{comment_id}/act", data=data, headers={"Accept": "application/json"})
