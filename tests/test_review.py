"""Moderators' verdicts at the edges the dashboard meets less often (the common paths are in test_dashboard)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from models.db import make_session_factory
from models.entities import Comment, Decision, ModerationAction, Moderator, Site, TrainingLabel
from moderation.intake import NewComment, accept_comment
from moderation.learning import moderator_examples
from moderation.review import APPROVE, REJECT, UNDO, ConflictError, ReviewError, put_back_by_undo, record_verdict
from moderation.sites import create_site
from tests.support.dashboard import add_moderator, held_comment


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


def test_a_verdict_sent_twice_says_the_moderator_changed_it_not_their_own_address(engine: Engine) -> None:
    """A tester's finding: a second click on "approve" said "changed by ana@example.org in the meantime" to Ana;
    another moderator's change still names them."""
    sessions = make_session_factory(engine)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        site, _ = create_site(session, "review-site")
        comment_id, model_decision = held_comment(session, site, "c-9")
        ana = session.get_one(Moderator, add_moderator(session, "ana@example.org"))
        bo = session.get_one(Moderator, add_moderator(session, "bo@example.org"))
        record_verdict(session, comment_id, ana, APPROVE, None, None, model_decision, now)
        with pytest.raises(ConflictError) as again:
            record_verdict(session, comment_id, ana, APPROVE, None, None, model_decision, now)
        with pytest.raises(ConflictError) as other:
            record_verdict(session, comment_id, bo, REJECT, "spam", None, model_decision, now)
    assert str(again.value) == (
        f"comment {comment_id} was changed by you, in another tab or with an earlier click, in the meantime; "
        "nothing was overwritten"
    )
    assert (
        str(other.value)
        == f"comment {comment_id} was changed by ana@example.org in the meantime; nothing was overwritten"
    )


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


def approve_and_undo(session: Session, site: Site, external_id: str, moderator: Moderator, now: datetime) -> list[int]:
    """A comment the model held, approved and the approval undone: ids of the hold, approval and put-back hold."""
    comment_id, held = held_comment(session, site, external_id)
    approved = record_verdict(session, comment_id, moderator, APPROVE, None, None, held, now).id
    return [held, approved, record_verdict(session, comment_id, moderator, UNDO, None, None, approved, now).id]


def test_an_undo_is_not_undone_in_turn(engine: Engine) -> None:
    """Undoing the undo would approve again, without a word, the comment whose approval was just withdrawn."""
    now = datetime.now(UTC)
    with make_session_factory(engine).begin() as session:
        site, _ = create_site(session, "review-site")
        moderator = session.get_one(Moderator, add_moderator(session, "ana@example.org"))
        _, _, put_back = approve_and_undo(session, site, "c-1", moderator, now)
        comment_id = session.get_one(Decision, put_back).comment_id
        with pytest.raises(ReviewError, match="the last action on this comment was an undo: approve or reject it"):
            record_verdict(session, comment_id, moderator, UNDO, None, None, put_back, now)
        current = session.scalars(select(Decision.id).where(Decision.comment_id == comment_id, Decision.is_current))
        assert list(current) == [put_back]
        assert session.scalar(select(func.count()).select_from(Decision)) == 3
        assert list(session.scalars(select(ModerationAction.action).order_by(ModerationAction.id))) == [
            APPROVE,
            UNDO,
        ]
        assert session.get_one(Comment, comment_id).status == "held"
        assert session.scalar(select(TrainingLabel).where(TrainingLabel.comment_id == comment_id)) is None


def test_the_decisions_an_undo_put_back_are_told_apart_in_one_query(engine: Engine) -> None:
    """A queue page asks for all its cards at once: only the decisions an undo restored, whether still current
    or not, and not the verdicts or model decisions around them."""
    sessions = make_session_factory(engine)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        site, _ = create_site(session, "review-site")
        moderator = session.get_one(Moderator, add_moderator(session, "ana@example.org"))
        undone = approve_and_undo(session, site, "undone", moderator, now)
        comment_id, held = held_comment(session, site, "rejected")
        rejected = record_verdict(session, comment_id, moderator, REJECT, "spam", None, held, now).id
        _, only_the_model = held_comment(session, site, "waiting")
        undone_then_approved = approve_and_undo(session, site, "approved-again", moderator, now)
        comment_id = session.get_one(Decision, undone_then_approved[-1]).comment_id
        approved_again = record_verdict(
            session, comment_id, moderator, APPROVE, None, None, undone_then_approved[-1], now
        ).id
    asked = [*undone, held, rejected, only_the_model, *undone_then_approved, approved_again]
    statements: list[str] = []

    def keep(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.startswith("BEGIN"):  # SQLite's transactions begin with a statement of their own
            statements.append(statement)

    with sessions() as session:
        event.listen(engine, "before_cursor_execute", keep)
        try:
            put_back = put_back_by_undo(session, asked)
        finally:
            event.remove(engine, "before_cursor_execute", keep)
        assert put_back == {undone[-1], undone_then_approved[-1]}
        assert len(statements) == 1, statements
        assert put_back_by_undo(session, []) == set()


def test_a_verdict_and_an_undo_keep_the_counts_and_the_lines_the_model_decided_with(engine: Engine) -> None:
    """The comment card shows the model's counts and lines whichever decision is current (they explain the hold)."""
    now = datetime.now(UTC)
    counted = {"duplicates_elsewhere": 2, "author_posts_last_hour": 11}
    with make_session_factory(engine).begin() as session:
        site, _ = create_site(session, "review-site")
        moderator = session.get_one(Moderator, add_moderator(session, "ana@example.org"))
        comment_id, held = held_comment(session, site, "c-1")
        session.get_one(Decision, held).signals = counted
        lines = {"spam_reject": 0.7, "spam_hold": 0.1, "advice_hold": 0.2}  # the dashboard draws its bars at these
        session.get_one(Decision, held).thresholds = lines
        approved = record_verdict(session, comment_id, moderator, APPROVE, None, None, held, now)
        put_back = record_verdict(session, comment_id, moderator, UNDO, None, None, approved.id, now)
        assert approved.signals == put_back.signals == counted
        assert approved.thresholds == put_back.thresholds == lines


def label_of(session: Session, comment_id: int) -> tuple[bool | None, bool | None, int | None] | None:
    """(spam, medical advice, moderator id) of the comment's training label; None when it has none."""
    label = session.scalar(select(TrainingLabel).where(TrainingLabel.comment_id == comment_id))
    return None if label is None else (label.spam, label.medical_advice, label.moderator_id)


def model_decided(session: Session, site: Site, external_id: str, outcome: str, reasons: list[str]) -> tuple[int, int]:
    """A comment the model approved or rejected by itself: (comment id, decision id)."""
    comment_id, decision_id = held_comment(session, site, external_id, "Massage helped my lower back a lot.")
    decision = session.get_one(Decision, decision_id)
    decision.outcome, decision.reasons = outcome, reasons
    session.get_one(Comment, comment_id).status = {APPROVE: "approved", REJECT: "rejected"}[outcome]
    session.flush()
    return comment_id, decision_id


@pytest.mark.parametrize(
    ("model_outcome", "model_reasons", "verdict", "reason"),
    [(APPROVE, [], REJECT, "spam"), (REJECT, ["spam"], APPROVE, None)],
)
def test_undoing_a_verdict_on_a_comment_the_model_decided_leaves_no_training_label(
    engine: Engine, model_outcome: str, model_reasons: list[str], verdict: str, reason: str | None
) -> None:
    """The model's own decisions are not labels: the undo withdraws the only person's judgement, so its label
    goes, as when an undo puts a hold back. It was rewritten from the model's decision put back, a "moderator"
    label that retraining (`moderator_examples`) learnt the model's own prediction from."""
    now = datetime.now(UTC)
    with make_session_factory(engine).begin() as session:
        site, _ = create_site(session, "review-site")
        moderator = session.get_one(Moderator, add_moderator(session, "ana@example.org"))
        comment_id, model_decision = model_decided(session, site, "c-model", model_outcome, model_reasons)
        given = record_verdict(session, comment_id, moderator, verdict, reason, None, model_decision, now)
        assert label_of(session, comment_id) is not None
        put_back = record_verdict(session, comment_id, moderator, UNDO, None, None, given.id, now)
        assert (put_back.outcome, put_back.reasons) == (model_outcome, model_reasons)
        assert label_of(session, comment_id) is None
        assert moderator_examples(session) == []


def test_undoing_a_verdict_puts_back_the_label_of_the_verdict_it_restores(engine: Engine) -> None:
    """Rejected as spam by one moderator, approved by another, the approval undone: the spam verdict stands
    again, and so does its label, the first moderator's. An undo that put the model's decision back and was
    then overruled, and that verdict undone in turn, puts the model's decision back: no label."""
    now = datetime.now(UTC)
    with make_session_factory(engine).begin() as session:
        site, _ = create_site(session, "review-site")
        ana = session.get_one(Moderator, add_moderator(session, "ana@example.org"))
        ben = session.get_one(Moderator, add_moderator(session, "ben@example.org"))
        comment_id, held = held_comment(session, site, "c-spam")
        rejected = record_verdict(session, comment_id, ana, REJECT, "spam", None, held, now)
        approved = record_verdict(session, comment_id, ben, APPROVE, None, None, rejected.id, now)
        assert label_of(session, comment_id) == (False, False, ben.id)
        record_verdict(session, comment_id, ben, UNDO, None, None, approved.id, now)
        assert label_of(session, comment_id) == (True, None, ana.id)

        comment_id, model_decision = model_decided(session, site, "c-model", APPROVE, [])
        rejected = record_verdict(session, comment_id, ana, REJECT, "spam", None, model_decision, now)
        put_back = record_verdict(session, comment_id, ana, UNDO, None, None, rejected.id, now)
        approved = record_verdict(session, comment_id, ben, REJECT, "medical_advice", None, put_back.id, now)
        assert label_of(session, comment_id) == (None, True, ben.id)
        record_verdict(session, comment_id, ben, UNDO, None, None, approved.id, now)
        assert label_of(session, comment_id) is None
