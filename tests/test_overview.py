"""The overview's numbers (/dashboard/overview/data) for comments taken through intake, the model, moderators'
verdicts, edits and deletions, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from models.db import make_session_factory
from models.entities import Decision, Moderator, OutboxMessage, Site
from moderation.decisions import decide_comment, hold_unclassified
from moderation.intake import NewComment, accept_comment
from moderation.lifecycle import apply_delete, apply_update
from moderation.reasons import reason_label
from moderation.review import record_verdict
from moderation.sites import create_site
from tests.conftest import TrainedModel
from tests.support.dashboard import add_moderator, sign_in

# Texts the test model decides as named (checked at each decision); numbered so that no two comments are
# duplicates of each other, which would be a signal of its own.
ORDINARY = "Thanks for this article number {n}, I had no idea massage could help with back pain."
ADVICE = "That's sciatica, not a muscle (case {n}). Take 800mg ibuprofen every 6 hours and skip the physio."
MODERATOR = "ana@example.org"


def days_ago(days: int, hour: int = 12) -> datetime:
    """A moment on an earlier day (never later than now, whatever the time of the run)."""
    return datetime.combine(datetime.now(UTC).date() - timedelta(days=days), time(hour), UTC)


@dataclass
class Timeline:
    """Comments taken through the real use cases, each step at a chosen moment."""

    sessions: sessionmaker[Session]
    model: TrainedModel
    site_id: int
    numbers: itertools.count[int]

    def text(self, template: str) -> str:
        return template.format(n=next(self.numbers))

    def receive(self, external_id: str, template: str, at: datetime) -> int:
        new = NewComment(external_id, "massage-therapy", self.text(template), created_at=at)
        with self.sessions.begin() as session:
            site = session.get(Site, self.site_id)
            assert site is not None
            return accept_comment(session, site, f"create-{external_id}", new, at).comment_id

    def decide(self, comment_id: int, expected: str, at: datetime) -> None:
        with self.sessions.begin() as session:
            decided = decide_comment(session, comment_id, self.model.model, at)
        assert decided is not None and decided.outcome == expected, decided

    def decided(self, external_id: str, template: str, outcome: str, at: datetime) -> int:
        comment_id = self.receive(external_id, template, at)
        self.decide(comment_id, outcome, at + timedelta(seconds=1))
        return comment_id

    def edit(self, external_id: str, template: str, at: datetime) -> None:
        new = NewComment(external_id, "massage-therapy", self.text(template), created_at=at, updated_at=at)
        with self.sessions.begin() as session:
            site = session.get(Site, self.site_id)
            assert site is not None
            assert apply_update(session, site, f"edit-{external_id}-{at.isoformat()}", new, at).queued

    def delete(self, external_id: str, at: datetime) -> None:
        with self.sessions.begin() as session:
            site = session.get(Site, self.site_id)
            assert site is not None
            apply_delete(session, site, f"delete-{external_id}", external_id, at, at)

    def verdict(self, comment_id: int, action: str, at: datetime, reason: str | None = None) -> None:
        with self.sessions.begin() as session:
            moderator = session.scalar(select(Moderator).where(Moderator.email == MODERATOR))
            assert moderator is not None
            current = session.scalar(select(Decision.id).where(Decision.comment_id == comment_id, Decision.is_current))
            record_verdict(session, comment_id, moderator, action, reason, None, current, at)


@pytest.fixture
def timeline(engine: Engine, active_model: TrainedModel) -> Timeline:
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        site, _ = create_site(session, "overview-site")
        add_moderator(session, MODERATOR)
        return Timeline(sessions, active_model, site.id, itertools.count(1))


@pytest.fixture
def moderator_client(client: FlaskClient, timeline: Timeline) -> FlaskClient:
    assert sign_in(client, MODERATOR).status_code == 302
    return client


def overview(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/dashboard/overview/data")
    assert response.status_code == 200
    data: dict[str, Any] = response.get_json()
    return data


def header_held(client: FlaskClient) -> int:
    page = client.get("/dashboard/overview").get_data(as_text=True)
    found = re.search(r"<strong>(\d+)</strong> held</a>", page)
    assert found, "no held count in the overview's header"
    return int(found.group(1))


def on_day(data: dict[str, Any], series: list[Any], moment: datetime) -> Any:
    return series[data["days"].index(moment.date().isoformat())]


# --- agreement: only moderators' verdicts -------------------------------------------------------------


def test_the_model_deciding_an_edited_comment_again_is_no_verdict(
    moderator_client: FlaskClient, timeline: Timeline
) -> None:
    approved_then_held = timeline.decided("a-1", ORDINARY, "approve", days_ago(3))
    timeline.edit("a-1", ADVICE, days_ago(2))
    timeline.decide(approved_then_held, "hold", days_ago(2) + timedelta(seconds=1))
    held_then_approved = timeline.decided("a-2", ADVICE, "hold", days_ago(3))
    timeline.edit("a-2", ORDINARY, days_ago(2))
    timeline.decide(held_then_approved, "approve", days_ago(2) + timedelta(seconds=1))
    # A verdict on the new text before the model saw it judges no decision of the model's.
    judged_while_pending = timeline.decided("a-3", ORDINARY, "approve", days_ago(3))
    timeline.edit("a-3", ADVICE, days_ago(2))
    timeline.verdict(judged_while_pending, "reject", days_ago(2) + timedelta(minutes=5), reason="medical_advice")

    assert overview(moderator_client)["agreement"] == {}


def test_moderators_verdicts_agree_with_or_overturn_the_model(
    moderator_client: FlaskClient, timeline: Timeline
) -> None:
    hold_approved = timeline.decided("v-1", ADVICE, "hold", days_ago(3))
    timeline.verdict(hold_approved, "approve", days_ago(2))
    hold_rejected = timeline.decided("v-2", ADVICE, "hold", days_ago(3))
    timeline.verdict(hold_rejected, "reject", days_ago(2), reason="medical_advice")
    approve_overturned = timeline.decided("v-3", ORDINARY, "approve", days_ago(3))
    timeline.verdict(approve_overturned, "reject", days_ago(2), reason="off_topic")
    # Rejected, then undone: the hold waits for a verdict again.
    undone = timeline.decided("v-4", ADVICE, "hold", days_ago(3))
    timeline.verdict(undone, "reject", days_ago(2), reason="spam")
    timeline.verdict(undone, "undo", days_ago(2) + timedelta(minutes=1))
    # Reviewed, edited, held for review again and reviewed again: two verdicts on two decisions.
    reviewed_twice = timeline.decided("v-5", ADVICE, "hold", days_ago(3))
    timeline.verdict(reviewed_twice, "approve", days_ago(3) + timedelta(minutes=5))
    timeline.edit("v-5", ORDINARY, days_ago(2))
    timeline.decide(reviewed_twice, "hold", days_ago(2) + timedelta(seconds=1))  # edited after review
    timeline.verdict(reviewed_twice, "approve", days_ago(1))

    data = overview(moderator_client)

    assert data["agreement"] == {"hold approved": 3, "hold rejected": 1, "approve overturned": 1}
    page = moderator_client.get("/dashboard/overview").get_data(as_text=True)
    assert "<strong>4</strong> holds reviewed: 3 approved, 1 rejected" in page


def test_only_verdicts_given_in_the_window_count(moderator_client: FlaskClient, timeline: Timeline) -> None:
    before_the_window = timeline.decided("w-1", ADVICE, "hold", days_ago(20))
    timeline.verdict(before_the_window, "approve", days_ago(20) + timedelta(hours=1))
    late_verdict = timeline.decided("w-2", ADVICE, "hold", days_ago(20))
    timeline.verdict(late_verdict, "reject", days_ago(1), reason="medical_advice")

    assert overview(moderator_client)["agreement"] == {"hold rejected": 1}


# --- the held queue -------------------------------------------------------------------------------------


def test_a_comment_the_site_deleted_leaves_the_held_queue(moderator_client: FlaskClient, timeline: Timeline) -> None:
    for n in range(3):
        timeline.decided(f"q-{n}", ADVICE, "hold", days_ago(4, hour=10))
    timeline.delete("q-0", days_ago(2))

    data = overview(moderator_client)

    assert on_day(data, data["queue_size"], days_ago(3)) == 3
    assert on_day(data, data["queue_size"], days_ago(2)) == 2
    assert data["queue_size"][-1] == header_held(moderator_client) == 2


def test_the_queue_age_is_that_of_the_oldest_comment_still_held(
    moderator_client: FlaskClient, timeline: Timeline
) -> None:
    timeline.decided("o-1", ADVICE, "hold", days_ago(3, hour=0))
    timeline.decided("o-2", ADVICE, "hold", days_ago(3, hour=12))
    timeline.delete("o-1", days_ago(3, hour=18))

    data = overview(moderator_client)

    # At the end of that day only o-2 waits: 12 hours, not o-1's 24.
    assert on_day(data, data["queue_oldest_hours"], days_ago(3)) == 12.0


def test_a_comment_held_again_after_an_edit_is_in_the_held_queue(
    moderator_client: FlaskClient, timeline: Timeline
) -> None:
    comment_id = timeline.decided("e-1", ORDINARY, "approve", days_ago(3))
    timeline.edit("e-1", ADVICE, days_ago(2))
    timeline.decide(comment_id, "hold", days_ago(2) + timedelta(seconds=1))

    data = overview(moderator_client)

    assert on_day(data, data["queue_size"], days_ago(3)) == 0
    assert on_day(data, data["queue_size"], days_ago(2)) == 1
    assert data["queue_size"][-1] == header_held(moderator_client) == 1


def test_a_held_comment_edited_and_waiting_to_be_decided_again_is_not_held(
    moderator_client: FlaskClient, timeline: Timeline
) -> None:
    timeline.decided("p-1", ADVICE, "hold", days_ago(2))
    timeline.edit("p-1", ORDINARY, datetime.now(UTC) - timedelta(minutes=1))

    assert overview(moderator_client)["queue_size"][-1] == header_held(moderator_client) == 0


def test_a_comment_held_for_longer_than_the_charts_reach_is_in_the_held_queue(
    moderator_client: FlaskClient, timeline: Timeline
) -> None:
    timeline.decided("old-1", ADVICE, "hold", days_ago(60))

    data = overview(moderator_client)

    assert data["queue_size"][-1] == header_held(moderator_client) == 1
    assert data["queue_oldest_hours"][-1] > 59 * 24


def test_an_old_hold_a_moderator_decided_in_the_window_counts_until_then(
    moderator_client: FlaskClient, timeline: Timeline
) -> None:
    comment_id = timeline.decided("old-2", ADVICE, "hold", days_ago(60))
    timeline.verdict(comment_id, "approve", days_ago(2))

    data = overview(moderator_client)

    assert on_day(data, data["queue_size"], days_ago(3)) == 1
    assert on_day(data, data["queue_size"], days_ago(2)) == 0
    assert data["agreement"] == {"hold approved": 1}


def test_an_old_hold_edited_and_decided_again_in_the_window_counts_until_then(
    moderator_client: FlaskClient, timeline: Timeline
) -> None:
    comment_id = timeline.decided("old-3", ADVICE, "hold", days_ago(60))
    timeline.edit("old-3", ORDINARY, days_ago(5))
    timeline.decide(comment_id, "approve", days_ago(5) + timedelta(seconds=1))

    data = overview(moderator_client)

    assert on_day(data, data["queue_size"], days_ago(6)) == 1
    assert on_day(data, data["queue_size"], days_ago(4)) == 0


# --- comments per day -----------------------------------------------------------------------------------


def test_comments_the_site_deleted_are_counted_apart_per_day(moderator_client: FlaskClient, timeline: Timeline) -> None:
    timeline.decided("d-1", ADVICE, "hold", days_ago(3))
    timeline.decided("d-2", ADVICE, "hold", days_ago(3))
    timeline.decided("d-3", ORDINARY, "approve", days_ago(3))
    timeline.delete("d-1", days_ago(2))

    data = overview(moderator_client)

    per_day = {kind: on_day(data, counts, days_ago(3)) for kind, counts in data["per_day"].items()}
    assert per_day == {"approve": 1, "hold": 1, "reject": 0, "deleted": 1}
    assert sum(sum(counts) for counts in data["per_day"].values()) == 3
    page = moderator_client.get("/dashboard/overview").get_data(as_text=True)
    assert "<th>Deleted</th>" in page and "deleted since are counted apart" in page


def test_the_top_reasons_come_with_the_labels_the_dashboard_shows(
    moderator_client: FlaskClient, timeline: Timeline
) -> None:
    """The chart names a reason as the page's text and the queue's chips do (it had replaced underscores)."""
    timeline.decided("r-1", ADVICE, "hold", days_ago(1))
    data = overview(moderator_client)
    assert ["medical_advice", 1] in data["top_reasons"]
    assert data["reason_labels"] == {reason: reason_label(reason) for reason, _ in data["top_reasons"]}
    assert data["reason_labels"]["medical_advice"] == "Medical advice"


def test_a_hold_made_without_scores_is_no_call_of_the_model_to_agree_with(
    moderator_client: FlaskClient, timeline: Timeline
) -> None:
    """Held as not_classified (its classification failed run after run): approving it says nothing of the model."""
    unscored = timeline.receive("u-1", ORDINARY, days_ago(2))
    with timeline.sessions.begin() as session:
        session.execute(update(OutboxMessage).where(OutboxMessage.comment_id == unscored).values(tries=4))
        assert hold_unclassified(session, unscored, timeline.model.version, days_ago(2)) is not None
    scored = timeline.decided("a-1", ADVICE, "hold", days_ago(2))
    for comment_id in (unscored, scored):
        timeline.verdict(comment_id, "approve", days_ago(1))

    data = overview(moderator_client)

    assert data["agreement"] == {"hold approved": 1}
    assert dict(data["top_reasons"]).get("not_classified") == 1  # still counted among the reasons held for
