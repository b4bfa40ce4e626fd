"""Moderators' verdicts at the edges the dashboard meets less often (the common paths are in test_dashboard)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from models.db import make_session_factory
from models.entities import Moderator
from moderation.intake import NewComment, accept_comment
from moderation.review import APPROVE, UNDO, ReviewError, record_verdict
from moderation.sites import create_site
from tests.support.dashboard import add_moderator


def test_undoing_a_verdict_given_before_the_model_decided_says_why_it_cannot(engine: Engine) -> None:
    """The verdict on a still-pending comment has no earlier decision to return to; say so, not "no action"."""
    sessions = make_session_factory(engine)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        site, _ = create_site(session, "review-site")
        new = NewComment(external_id="c-1", article_id="massage-therapy", body="Massage helped my back.")
        comment_id = accept_comment(session, site, "wh-1", new, now).comment_id
        moderator = session.get_one(Moderator, add_moderator(session, "ana@example.org"))
        approved = record_verdict(session, comment_id, moderator, APPROVE, None, None, None, now)
        with pytest.raises(ReviewError, match="before the model decided"):
            record_verdict(session, comment_id, moderator, UNDO, None, None, approved.id, now)
