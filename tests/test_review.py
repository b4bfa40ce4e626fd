"""Moderators' verdicts at the edges the dashboard meets less often (the common paths are in test_dashboard)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from models.db import make_session_factory
from models.entities import Moderator, TrainingLabel
from moderation.intake import NewComment, accept_comment
from moderation.review import APPROVE, REJECT, UNDO, ReviewError, record_verdict
from moderation.sites import create_site
from tests.support.dashboard import add_moderator


def approved_comment(session: Session, body: str, now: datetime) -> tuple[int, Moderator, int]:
    """(comment id, moderator, id of their approval) for a new comment a moderator approved at once."""
    site, _ = create_site(session, "review-site")
    new = NewComment(external_id="c-1", article_id="massage-therapy", body=body)
    comment_id = accept_comment(session, site, "wh-1", new, now).comment_id
    moderator = session.get_one(Moderator, add_moderator(session, "ana@example.org"))
    return comment_id, moderator, record_verdict(session, comment_id, moderator, APPROVE, None, None, None, now).id


def test_undoing_a_verdict_given_before_the_model_decided_says_why_it_cannot(engine: Engine) -> None:
    """The verdict on a still-pending comment has no earlier decision to return to; say so, not "no action"."""
    sessions = make_session_factory(engine)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        comment_id, moderator, approved = approved_comment(session, "Massage helped my back.", now)
        with pytest.raises(ReviewError, match="before the model decided"):
            record_verdict(session, comment_id, moderator, UNDO, None, None, approved, now)


@pytest.mark.parametrize(("reason", "note"), [("abuse", None), ("off_topic", None), ("other", "a duplicate")])
def test_a_final_verdict_without_a_label_removes_the_label_an_earlier_verdict_gave(
    engine: Engine, reason: str, note: str | None
) -> None:
    """Approved ("neither spam nor advice"), then rejected for a reason that says nothing about either label:
    the approval's label no longer stands, so it is not trained on."""
    sessions = make_session_factory(engine)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        comment_id, moderator, approved = approved_comment(session, "You lot are all idiots.", now)
        label = session.scalar(select(TrainingLabel).where(TrainingLabel.comment_id == comment_id))
        assert label is not None and (label.spam, label.medical_advice) == (False, False)
        record_verdict(session, comment_id, moderator, REJECT, reason, note, approved, now)
    with sessions() as session:
        assert session.scalar(select(TrainingLabel).where(TrainingLabel.comment_id == comment_id)) is None


def test_a_later_verdict_with_a_label_replaces_the_earlier_label(engine: Engine) -> None:
    sessions = make_session_factory(engine)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        comment_id, moderator, approved = approved_comment(session, "Cheap pills at www.rx-deals.xyz", now)
        record_verdict(session, comment_id, moderator, REJECT, "spam", None, approved, now)
    with sessions() as session:
        labels = session.scalars(select(TrainingLabel).where(TrainingLabel.comment_id == comment_id)).all()
        assert [(row.spam, row.medical_advice) for row in labels] == [(True, None)]
