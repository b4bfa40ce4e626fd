"""The invariant checker itself (tests/support/invariants.py) must catch what it exists to catch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from models.db import make_session_factory
from models.entities import CallbackDelivery, Comment, Decision, WebhookReceipt
from moderation.callbacks import COMMENT_DECIDED, decision_payload
from moderation.intake import body_fingerprint
from moderation.sites import create_site
from tests.support.invariants import check_invariants

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def store(engine: Engine, *, status: str, callback: str, deleted: bool = False, delivered_late: bool = False) -> int:
    """A comment with one current model decision and its callback in state ``callback``."""
    with make_session_factory(engine).begin() as session:
        site, _ = create_site(session, "checked-site", "http://127.0.0.1:9/callback")
        comment = Comment(
            site_id=site.id,
            external_id="c-1",
            article_id="a",
            body="text",
            body_fingerprint=body_fingerprint("text"),
            received_at=NOW,
            status="deleted" if deleted else status,
            deleted_at=NOW + timedelta(minutes=1) if deleted else None,
        )
        session.add(comment)
        session.flush()
        session.add(WebhookReceipt(site_id=site.id, webhook_id="msg_last", comment_id=comment.id, received_at=NOW))
        outcome = {"approved": "approve", "held": "hold", "rejected": "reject"}[status]
        decision = Decision(comment_id=comment.id, outcome=outcome, is_current=True, created_at=NOW)
        session.add(decision)
        session.flush()
        comment.status = status  # the payload describes the comment as decided, before any deletion
        payload = decision_payload(COMMENT_DECIDED, site, comment, decision)
        comment.status = "deleted" if deleted else status
        session.add(
            CallbackDelivery(
                site_id=site.id,
                comment_id=comment.id,
                decision_id=decision.id,
                event=COMMENT_DECIDED,
                message_id="msg_cb_1",
                payload=payload,
                status=callback,
                delivered_at=NOW + timedelta(minutes=5 if delivered_late else -5) if callback == "delivered" else None,
            )
        )
        return comment.id


def test_a_delivered_current_decision_passes(engine: Engine) -> None:
    check_invariants(engine, [store(engine, status="held", callback="delivered")], None)


def test_a_cancelled_callback_of_a_deleted_comment_passes(engine: Engine) -> None:
    check_invariants(engine, [store(engine, status="held", callback="cancelled", deleted=True)], None)


def test_a_cancelled_callback_of_the_current_decision_is_a_violation(engine: Engine) -> None:
    comment_id = store(engine, status="held", callback="cancelled")
    with pytest.raises(AssertionError, match="never told the current outcome"):
        check_invariants(engine, [comment_id], None)


def test_a_callback_delivered_after_the_deletion_is_a_violation(engine: Engine) -> None:
    comment_id = store(engine, status="held", callback="delivered", deleted=True, delivered_late=True)
    with pytest.raises(AssertionError, match="delivered after comment"):
        check_invariants(engine, [comment_id], None)
