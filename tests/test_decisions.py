"""Deciding a comment: one current decision, the comment's status, the outbox and the callback, once."""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, SADeprecationWarning
from sqlalchemy.orm import Session, sessionmaker

from models.db import create_db_engine, make_session_factory
from models.entities import CallbackDelivery, Comment, CommentStatus, Decision, OutboxMessage, Outcome, Site
from models.migrate import upgrade_database
from moderation import decisions as decisions_module
from moderation import outbox
from moderation.decisions import (
    AUTHOR_IP_WINDOW,
    Decided,
    decide_comment,
    decide_waiting,
    gather_signals,
    gather_signals_many,
    recorded_signals,
)
from moderation.features import OtherScript
from moderation.intake import NewComment, accept_comment, record_receipt
from moderation.lists import add_entry
from moderation.policy import Signals
from moderation.sites import create_site, require_site
from tests.conftest import TrainedModel
from tests.support.services import fresh_postgres_database, postgres_reachable

NOW = datetime.now(UTC).replace(microsecond=0)
FAR_FUTURE = NOW + timedelta(days=365)  # a relay cutoff every row is due before
SITE = "backpain-advisor"
CAMPAIGN = "Great article!! I fixed my back in 3 days with the method on my profile, check it"


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    with make_session_factory(engine).begin() as session:
        create_site(session, SITE, "https://site.example/moderation-callback")
        create_site(session, "no-callback-site")
        create_site(session, "other-site")
    return make_session_factory(engine)


def post(
    sessions: sessionmaker[Session],
    external_id: str,
    body: str = "Massage helped me a lot, but only with stretching too.",
    *,
    site: str = SITE,
    article: str = "massage-therapy",
    email: str | None = "jan@example.org",
    ip: str | None = "203.0.113.9",
    received: datetime = NOW,
    status: str | None = None,
) -> int:
    """Accept a comment as intake does (optionally already decided, by setting its status)."""
    with sessions.begin() as session:
        new = NewComment(external_id=external_id, article_id=article, body=body, author_email=email, author_ip=ip)
        accepted = accept_comment(session, require_site(session, site), f"wh-{site}-{external_id}", new, received)
        if status is not None:
            session.get_one(Comment, accepted.comment_id).status = status
        return accepted.comment_id


def decide(
    sessions: sessionmaker[Session], comment_id: int, model: TrainedModel, now: datetime = NOW
) -> Decided | None:
    with sessions.begin() as session:
        return decide_comment(session, comment_id, model.model, now)


def rows(engine: Engine, model: type, **where: Any) -> list[Any]:
    with make_session_factory(engine)() as session:
        return list(session.scalars(select(model).filter_by(**where)))


def set_site(sessions: sessionmaker[Session], name: str, **values: Any) -> None:
    with sessions.begin() as session:
        site = require_site(session, name)
        for key, value in values.items():
            setattr(site, key, value)


# --- one decision per comment --------------------------------------------------------------------


def test_deciding_stores_one_current_decision_and_schedules_the_callback(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    comment_id = post(sessions, "c-1")
    decided = decide(sessions, comment_id, active_model)

    assert decided is not None and decided.comment_id == comment_id
    (decision,) = rows(engine, Decision, comment_id=comment_id)
    assert decision.id == decided.decision_id and decision.is_current and decision.outcome == decided.outcome
    assert decision.model_version == active_model.version and decision.decided_by == "model"
    assert decision.spam_score is not None and 0.0 <= decision.spam_score <= 1.0
    assert decision.advice_score is not None and 0.0 <= decision.advice_score <= 1.0
    assert set(decision.explanation) == {"spam", "medical_advice"}
    (comment,) = rows(engine, Comment, id=comment_id)
    assert comment.status == Outcome(decided.outcome).comment_status
    assert rows(engine, OutboxMessage, comment_id=comment_id) == []
    (delivery,) = rows(engine, CallbackDelivery, comment_id=comment_id)
    assert decided.delivery_id == delivery.id and delivery.decision_id == decision.id
    assert delivery.status == "pending" and delivery.next_attempt_at == NOW
    assert delivery.payload["data"]["status"] == comment.status
    assert delivery.payload["data"]["model_version"] == active_model.version


def test_no_callback_for_a_site_without_a_url(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    comment_id = post(sessions, "c-1", site="no-callback-site")
    decided = decide(sessions, comment_id, active_model)

    assert decided is not None and decided.delivery_id is None
    assert rows(engine, CallbackDelivery) == []
    assert len(rows(engine, Decision, comment_id=comment_id)) == 1
    assert rows(engine, OutboxMessage) == []


def test_deciding_again_changes_nothing(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    comment_id = post(sessions, "c-1")
    first = decide(sessions, comment_id, active_model)
    assert first is not None
    status = rows(engine, Comment, id=comment_id)[0].status

    # A redelivered task, a relayed outbox row, or the comment's outbox row written again.
    assert decide(sessions, comment_id, active_model, NOW + timedelta(minutes=5)) is None
    with sessions.begin() as session:
        session.add(OutboxMessage(kind="classify", comment_id=comment_id, created_at=NOW))
    assert decide(sessions, comment_id, active_model, NOW + timedelta(minutes=10)) is None

    assert [d.id for d in rows(engine, Decision)] == [first.decision_id]
    assert [d.id for d in rows(engine, CallbackDelivery)] == [first.delivery_id]
    assert rows(engine, Comment, id=comment_id)[0].status == status
    assert rows(engine, OutboxMessage) == []


def test_a_comment_that_is_gone_is_skipped(sessions: sessionmaker[Session], active_model: TrainedModel) -> None:
    assert decide(sessions, 987_654, active_model) is None


def test_two_workers_racing_leave_exactly_one_current_decision(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """A decides and has not committed yet when B starts on the same comment: B stores nothing.

    A holds the comment's row lock (PostgreSQL), so B skips it at once instead of waiting; on SQLite every
    transaction begins IMMEDIATE (models.db), so B waits at its BEGIN and then finds the comment decided.
    A listener on the engine tells when B has sent its first statement; only then does A commit.
    """
    comment_id = post(sessions, "c-1")
    b_started = threading.Event()
    outcome: dict[str, Any] = {}

    def before_execute(_conn: Any, _cursor: Any, _statement: str, *_args: Any) -> None:
        if threading.current_thread().name == "worker-b":
            b_started.set()

    def worker_b() -> None:
        with sessions() as session_b:
            try:
                outcome["decided"] = decide_comment(session_b, comment_id, active_model.model, NOW)
                session_b.commit()
            except IntegrityError as error:
                outcome["error"] = error

    event.listen(engine, "before_cursor_execute", before_execute)
    try:
        with sessions() as session_a:
            won = decide_comment(session_a, comment_id, active_model.model, NOW)
            assert won is not None
            thread = threading.Thread(target=worker_b, name="worker-b")
            thread.start()
            assert b_started.wait(timeout=60), "worker B never started"
            session_a.commit()
        thread.join(timeout=60)
        assert not thread.is_alive()
    finally:
        event.remove(engine, "before_cursor_execute", before_execute)

    # The loser stores nothing: it skips the locked row, finds the comment decided, or at worst its
    # compare-and-swap or the partial unique index refuses it (IntegrityError).
    assert outcome.get("decided") is None
    assert "error" not in outcome or isinstance(outcome["error"], IntegrityError)
    (current,) = rows(engine, Decision, comment_id=comment_id, is_current=True)
    assert current.id == won.decision_id
    assert [d.decision_id for d in rows(engine, CallbackDelivery)] == [won.decision_id]
    assert rows(engine, Comment, id=comment_id)[0].status == Outcome(won.outcome).comment_status


def test_the_database_refuses_a_second_current_decision(engine: Engine, sessions: sessionmaker[Session]) -> None:
    comment_id = post(sessions, "c-1")
    with sessions.begin() as session:
        session.add(Decision(comment_id=comment_id, outcome="approve", is_current=True, created_at=NOW))
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(Decision(comment_id=comment_id, outcome="reject", is_current=True, created_at=NOW))
    with sessions.begin() as session:  # history rows that are not current are fine
        session.add(Decision(comment_id=comment_id, outcome="hold", is_current=False, created_at=NOW))
    assert [d.outcome for d in rows(engine, Decision, comment_id=comment_id, is_current=True)] == ["approve"]


# --- the policy sees the site's thresholds and the signals ---------------------------------------


def test_site_thresholds_override_the_models(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    set_site(sessions, SITE, advice_hold_threshold=0.0)  # every comment needs a human
    held = decide(sessions, post(sessions, "c-1"), active_model)
    assert held is not None and held.outcome == Outcome.HOLD
    assert "medical_advice" in rows(engine, Decision, id=held.decision_id)[0].reasons

    set_site(sessions, SITE, spam_reject_threshold=0.0, spam_hold_threshold=0.0)
    rejected = decide(sessions, post(sessions, "c-2"), active_model)
    assert rejected is not None and rejected.outcome == Outcome.REJECT
    assert rows(engine, Decision, id=rejected.decision_id)[0].reasons[0] == "spam"
    assert rows(engine, Comment, external_id="c-2")[0].status == CommentStatus.REJECTED


def test_a_decision_keeps_the_lines_its_scores_were_read_against(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """The model's lines with the site's own values over them, as they were: the dashboard draws these."""
    model_lines = active_model.model.card["thresholds"]
    first = decide(sessions, post(sessions, "c-1"), active_model)
    set_site(sessions, SITE, advice_hold_threshold=0.0, spam_hold_threshold=0.35)
    second = decide(sessions, post(sessions, "c-2"), active_model)
    set_site(sessions, SITE, advice_hold_threshold=None, spam_hold_threshold=None)

    assert first is not None and second is not None
    assert rows(engine, Decision, id=first.decision_id)[0].thresholds == model_lines
    assert rows(engine, Decision, id=second.decision_id)[0].thresholds == {
        "spam_reject": model_lines["spam_reject"],
        "spam_hold": 0.35,
        "advice_hold": 0.0,
    }


def test_author_history_and_duplicates_reach_the_decision(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    set_site(sessions, SITE, spam_hold_threshold=1.0, spam_reject_threshold=1.0, advice_hold_threshold=1.0)
    for number in range(2):
        post(sessions, f"old-{number}", f"Earlier {number}", received=NOW - timedelta(days=3), status="rejected")
    post(sessions, "elsewhere", CAMPAIGN, article="sciatica", email="bot@example.net", ip="198.51.100.1")
    decided = decide(sessions, post(sessions, "c-1", CAMPAIGN), active_model)

    assert decided is not None and decided.outcome == Outcome.HOLD
    decision = rows(engine, Decision, id=decided.decision_id)[0]
    assert decision.reasons == ["duplicate", "author_rejected_before"]
    # The counts behind those reasons, kept as they were when the policy read them.
    assert decision.signals == {
        "link_count": 0,
        "blocked_terms": 0,
        "duplicates_elsewhere": 1,
        "author_posts_last_hour": 0,
        "author_approved_before": 0,
        "author_rejected_before": 2,
        "author_allowed": False,
        "other_script": "none",
        "hidden_characters": False,
    }


def test_a_blocked_authors_address_is_not_kept_with_the_decisions_signals(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """Erasure finds personal data in the comment and its explanation, not in the signals: only a count."""
    with sessions.begin() as session:
        add_entry(session, "block", "author", "jan@example.org", None, None, NOW)
    decided = decide(sessions, post(sessions, "c-1"), active_model)

    assert decided is not None and decided.outcome == Outcome.REJECT
    decision = rows(engine, Decision, id=decided.decision_id)[0]
    assert decision.reasons[0] == "blocked_term" and decision.signals["blocked_terms"] == 1
    assert "jan@example.org" not in json.dumps(decision.signals)


def test_the_signals_kept_with_a_decision_hold_no_text_whatever_a_signal_holds() -> None:
    """Fails closed: a text-holding signal (today the blocked terms) is kept as a count, nothing else as text."""
    every_text_field = {
        f.name: ("author:jan@example.org",) for f in dataclass_fields(Signals) if isinstance(f.default, tuple)
    }
    assert every_text_field, "Signals has a text-holding field to try"
    record = recorded_signals(Signals(other_script=OtherScript.MOSTLY, **every_text_field))  # type: ignore[arg-type]
    assert "jan@example.org" not in json.dumps(record)
    assert all(isinstance(v, int) or v == OtherScript.MOSTLY for v in record.values()), record
    assert {name: record[name] for name in every_text_field} == dict.fromkeys(every_text_field, 1)


def test_a_comment_in_a_script_the_model_never_learned_is_held_for_a_person(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    set_site(sessions, SITE, spam_hold_threshold=1.0, spam_reject_threshold=1.0, advice_hold_threshold=1.0)
    russian_dosing = "Принимайте ибупрофен по 800 мг три раза в день и бросьте таблетки от давления."
    decided = decide(sessions, post(sessions, "c-ru", russian_dosing), active_model)

    assert decided is not None and decided.outcome == Outcome.HOLD  # thresholds at 1.0 would approve anything
    assert rows(engine, Decision, id=decided.decision_id)[0].reasons == ["unfamiliar_language"]


# --- signals gathered from the database ----------------------------------------------------------


def signals_for(sessions: sessionmaker[Session], comment_id: int, now: datetime = NOW):  # type: ignore[no-untyped-def]
    with sessions() as session:
        return gather_signals(session, session.get_one(Comment, comment_id), now)


def test_duplicates_are_counted_across_articles_within_a_day(sessions: sessionmaker[Session]) -> None:
    post(sessions, "a", CAMPAIGN, article="sciatica", email="x@example.net", ip="198.51.100.1")
    post(sessions, "b", CAMPAIGN.upper().replace(" ", "   "), article="mattress", email=None, ip=None)
    post(sessions, "old", CAMPAIGN, article="running", received=NOW - timedelta(days=1, minutes=1))
    post(sessions, "other", CAMPAIGN, site="other-site")
    post(sessions, "different", CAMPAIGN + " now", article="yoga-pilates")
    comment_id = post(sessions, "c-1", CAMPAIGN, email="new@example.org", ip="192.0.2.1")

    assert signals_for(sessions, comment_id).duplicates_elsewhere == 2


def test_short_repeated_comments_are_not_duplicates(sessions: sessionmaker[Session]) -> None:
    for number in range(3):
        post(sessions, f"t-{number}", "Thanks, great article!", article=f"article-{number}")
    assert signals_for(sessions, post(sessions, "c-1", "Thanks, great article!")).duplicates_elsewhere == 0


def test_author_posts_in_the_last_hour_count_by_email_or_ip(sessions: sessionmaker[Session]) -> None:
    post(sessions, "same-email", "one", ip="192.0.2.50", received=NOW - timedelta(minutes=10))
    post(sessions, "same-ip", "two", email="other@example.org", received=NOW - timedelta(minutes=59))
    post(sessions, "too-old", "three", received=NOW - timedelta(minutes=61))
    post(sessions, "stranger", "four", email="s@example.org", ip="192.0.2.99", received=NOW - timedelta(minutes=1))
    post(sessions, "other-site", "five", site="other-site", received=NOW - timedelta(minutes=1))
    comment_id = post(sessions, "c-1")

    signals = signals_for(sessions, comment_id)
    assert signals.author_posts_last_hour == 2


def test_author_history_counts_approved_and_rejected_comments(sessions: sessionmaker[Session]) -> None:
    long_ago = NOW - timedelta(days=30)
    for number, status in enumerate(["approved", "approved", "approved", "rejected", "held", "pending"]):
        post(sessions, f"h-{number}", f"comment {number}", received=long_ago, status=status)
    post(sessions, "someone-else", "x", email="s@example.org", ip="192.0.2.99", received=long_ago, status="rejected")
    comment_id = post(sessions, "c-1", "Look at https://a.example.com and www.b.example.org please")

    signals = signals_for(sessions, comment_id)
    assert (signals.author_approved_before, signals.author_rejected_before) == (3, 1)
    assert signals.author_posts_last_hour == 0
    assert signals.link_count == 2


def test_what_others_did_from_the_same_ip_counts_for_a_day_and_an_e_mail_for_good(
    sessions: sessionmaker[Session],
) -> None:
    """A shared address (a carrier, an office, a site's proxy) must not make every later commenter suspect."""
    shared_ip = "198.51.100.7"
    for number in range(3):
        post(
            sessions,
            f"old-{number}",
            f"old {number}",
            email=f"spammer{number}@example.net",
            ip=shared_ip,
            received=NOW - AUTHOR_IP_WINDOW - timedelta(minutes=number + 1),
            status="rejected",
        )
    reader = post(sessions, "reader", email="reader@example.org", ip=shared_ip)
    assert signals_for(sessions, reader).author_rejected_before == 0

    post(
        sessions,
        "fresh",
        "fresh",
        email="bot@example.net",
        ip=shared_ip,
        received=NOW - AUTHOR_IP_WINDOW + timedelta(minutes=5),
        status="rejected",
    )
    post(
        sessions,
        "mine",
        "mine",
        email="reader@example.org",
        ip="192.0.2.1",
        received=NOW - timedelta(days=90),
        status="rejected",
    )
    assert signals_for(sessions, reader).author_rejected_before == 2  # yesterday's from the IP, the e-mail's old one
    anonymous = post(sessions, "anonymous", email=None, ip=shared_ip)
    assert signals_for(sessions, anonymous).author_rejected_before == 1


def test_an_ipv6_authors_other_addresses_in_the_same_64_are_the_same_author(sessions: sessionmaker[Session]) -> None:
    """Privacy addresses change within the subscriber's /64 every day, or per connection: counted per address,
    a rejected spammer came back as a stranger from the next address."""
    for number in range(2):
        post(
            sessions,
            f"rejected-{number}",
            f"rejected {number}",
            email=f"bot{number}@example.net",
            ip=f"2001:db8:aa:bb:{number + 1}::7",
            received=NOW - timedelta(minutes=30),
            status="rejected",
        )
    post(sessions, "next-door", "x", email="n@example.net", ip="2001:db8:aa:bc::7", status="rejected")
    again = post(sessions, "again", email="bot9@example.net", ip="2001:db8:aa:bb:ffff::1")
    signals = signals_for(sessions, again)
    assert (signals.author_rejected_before, signals.author_posts_last_hour) == (2, 2)


def test_an_anonymous_comment_has_no_author_signals(sessions: sessionmaker[Session]) -> None:
    post(sessions, "h-1", "before", email=None, ip=None, status="rejected")
    signals = signals_for(sessions, post(sessions, "c-1", email=None, ip=None))
    assert (signals.author_posts_last_hour, signals.author_approved_before, signals.author_rejected_before) == (0, 0, 0)


def test_sites_are_kept_apart(sessions: sessionmaker[Session]) -> None:
    for number in range(3):
        post(sessions, f"o-{number}", f"elsewhere {number}", site="other-site", status="rejected")
    signals = signals_for(sessions, post(sessions, "c-1"))
    assert (signals.author_posts_last_hour, signals.author_rejected_before) == (0, 0)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Site)) == 3


def test_gather_signals_uses_no_deprecated_api(sessions: sessionmaker[Session]) -> None:
    comment_id = post(sessions, "c-1")
    with warnings.catch_warnings():  # the module-wide ignore above would otherwise win
        warnings.simplefilter("error", SADeprecationWarning)
        signals_for(sessions, comment_id)


# --- a worker decides the waiting comments together ----------------------------------------------


def test_waiting_comments_are_decided_together_each_with_its_own_signals(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """One task decides what is waiting; each comment gets the signals it would get alone."""
    post(
        sessions, "old", "Earlier comment", email="bot@example.net", received=NOW - timedelta(days=3), status="rejected"
    )
    ids = [
        post(sessions, "c-1", CAMPAIGN, email="bot@example.net", ip="198.51.100.1"),
        post(sessions, "c-2", CAMPAIGN, email="other@example.net", ip="198.51.100.2", article="sciatica"),
        post(sessions, "c-3", "Thanks, helpful read.", email=None, ip="198.51.100.1"),
        post(sessions, "c-4", "Take 800mg ibuprofen every 6 hours and skip the physio.", email="", ip=None),
        post(sessions, "c-5", "My GP sent me to a physio and it helped.", site="other-site", email="bot@example.net"),
    ]
    with sessions() as session:
        comments = [session.get_one(Comment, i) for i in ids]
        alone = {c.id: gather_signals(session, c, NOW) for c in comments}
        together = gather_signals_many(session, comments, NOW)
    assert together == alone
    assert alone[ids[0]].duplicates_elsewhere == 1 and alone[ids[0]].author_rejected_before == 1
    assert alone[ids[2]].author_posts_last_hour == 1  # c-1 shares its IP
    assert alone[ids[3]].author_posts_last_hour == 0  # an empty e-mail is nobody's e-mail
    assert alone[ids[4]].author_rejected_before == 0  # another site's history is not this site's

    with sessions.begin() as session:
        decided = decide_waiting(session, ids[2], active_model.model, NOW, batch_size=10)
    # One comment per author in a batch: c-1 shares c-3's IP, so it waits for the next task.
    assert sorted(d.comment_id for d in decided) == sorted(ids[1:])
    with sessions.begin() as session:
        decided += decide_waiting(session, ids[0], active_model.model, NOW, batch_size=10)
    assert sorted(d.comment_id for d in decided) == sorted(ids)
    assert [m.comment_id for m in rows(engine, OutboxMessage)] == [rows(engine, Comment, external_id="old")[0].id]
    assert len(rows(engine, Decision, is_current=True)) == len(ids)
    deliveries = rows(engine, CallbackDelivery)
    assert sorted(d.comment_id for d in deliveries) == sorted(ids[:4])  # other-site has no callback URL
    for each in decided:
        (decision,) = rows(engine, Decision, id=each.decision_id)
        assert decision.explanation and decision.outcome == each.outcome
        assert rows(engine, Comment, id=each.comment_id)[0].status == Outcome(each.outcome).comment_status
    # The queue's own messages for those comments find nothing left to do.
    assert all(decide(sessions, i, active_model) is None for i in ids)
    assert len(rows(engine, Decision)) == len(ids)


def test_two_workers_draining_at_once_never_take_the_same_comment(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    ids = [
        post(sessions, f"c-{n}", f"Comment number {n} about my back.", email=f"r{n}@example.org", ip=f"198.51.100.{n}")
        for n in range(8)
    ]
    with sessions() as session_a:
        first = decide_waiting(session_a, ids[0], active_model.model, NOW, batch_size=4)
        assert len(first) == 4
        if engine.dialect.name == "postgresql":  # on SQLite a second writer waits for the first instead
            with sessions.begin() as session_b:
                second = decide_waiting(session_b, ids[1], active_model.model, NOW, batch_size=8)
            taken_by_a = {d.comment_id for d in first}
            assert second and not taken_by_a & {d.comment_id for d in second}
        session_a.commit()
    with sessions.begin() as session:
        decide_waiting(session, ids[-1], active_model.model, NOW, batch_size=8)
    decided = rows(engine, Decision, is_current=True)
    assert sorted(d.comment_id for d in decided) == sorted(ids)


def test_a_worker_starting_beside_another_fills_its_batch_past_the_comments_the_other_holds(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """Both see the same oldest candidates: the second's batch once shrank to its own comment, the rest of
    its room spent on rows the first had locked, while newer comments waited."""
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks: on SQLite a second writer waits for the first instead")
    ids = [
        post(sessions, f"c-{n}", f"Comment number {n} about my back.", email=f"r{n}@example.org", ip=f"198.51.100.{n}")
        for n in range(8)
    ]
    with sessions() as session_a:
        first = decide_waiting(session_a, ids[0], active_model.model, NOW, batch_size=4)
        assert sorted(d.comment_id for d in first) == ids[:4]
        with sessions.begin() as session_b:
            second = decide_waiting(session_b, ids[4], active_model.model, NOW, batch_size=4)
        assert sorted(d.comment_id for d in second) == ids[4:]
        session_a.commit()
    assert sorted(d.comment_id for d in rows(engine, Decision, is_current=True)) == ids


def test_an_authors_comments_get_the_same_verdicts_from_a_batch_as_one_by_one(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """A batch-mate's rejection is not committed yet, so one author's comments never share a batch."""
    spam = [
        "BUY CHEAP VIAGRA NOW at http://pillz.xyz best prices!!! click here http://pillz.xyz/deal",
        "Make $5000 a week from home, click http://cash-now.biz and subscribe to my channel!!!",
    ]
    ordinary = ["Thanks, this was a helpful read about stretching.", "My physio said the same thing about posture."]
    ids = [
        post(sessions, f"c-{n}", body, email="bot@example.net", ip=f"198.51.100.{n}")
        for n, body in enumerate(spam + ordinary)
    ]
    while undecided := [i for i in ids if not rows(engine, Decision, comment_id=i)]:
        with sessions.begin() as session:
            assert len(decide_waiting(session, undecided[0], active_model.model, NOW, batch_size=20)) == 1
    outcomes = [rows(engine, Decision, comment_id=i)[0] for i in ids]
    assert [d.outcome for d in outcomes[:2]] == ["reject", "reject"]
    assert all(d.outcome == "hold" and "author_rejected_before" in d.reasons for d in outcomes[2:])


def test_a_lone_comment_is_decided_in_ten_statements_its_site_read_with_it(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """Each statement is a round trip a steady trickle of comments pays per comment: lock the comment (with
    its site), look for others waiting, latest decisions, three signals, claim, decision, outbox, callback."""
    comment_id = post(sessions, "c-1")
    statements: list[str] = []

    def keep(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.startswith("BEGIN"):  # SQLite's transactions begin with a statement of their own
            statements.append(" ".join(statement.split()[:4]))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        with sessions.begin() as session:
            assert len(decide_waiting(session, comment_id, active_model.model, NOW, batch_size=20)) == 1
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    assert len(statements) == 10, statements
    assert not any(s.startswith("SELECT sites.") for s in statements)


def test_the_relay_marks_the_work_it_published(engine: Engine, sessions: sessionmaker[Session]) -> None:
    ids = [post(sessions, f"c-{n}", email=f"r{n}@example.org", ip=f"198.51.100.{n}") for n in range(3)]
    work = {row.comment_id: row.id for row in rows(engine, OutboxMessage)}
    with sessions.begin() as relay:
        outbox.mark_published(relay, [work[ids[0]], work[ids[2]]], NOW + timedelta(minutes=1), due_before=FAR_FUTURE)
    marked = {r.comment_id: (r.attempts, r.published_at is not None) for r in rows(engine, OutboxMessage)}
    assert marked == {ids[0]: (1, True), ids[1]: (0, False), ids[2]: (1, True)}


def test_the_relay_never_waits_for_work_a_decision_holds(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """A decision deletes its comments' outbox rows while the relay marks rows it published: if the relay
    waited for a row the decision holds, and the decision for one the relay holds, they would deadlock."""
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks: on SQLite one writer waits for the other's whole transaction")
    ids = [post(sessions, f"c-{n}", email=f"r{n}@example.org", ip=f"198.51.100.{n}") for n in range(2)]
    work = {row.comment_id: row.id for row in rows(engine, OutboxMessage)}
    with sessions() as deciding:
        assert [d.comment_id for d in decide_waiting(deciding, ids[0], active_model.model, NOW)] == [ids[0]]
        with sessions.begin() as relay:
            relay.execute(text("SET LOCAL lock_timeout = '2s'"))  # waiting would fail the test
            outbox.mark_published(relay, [work[ids[0]], work[ids[1]]], NOW, due_before=FAR_FUTURE)
        deciding.commit()
    assert [(r.comment_id, r.attempts) for r in rows(engine, OutboxMessage)] == [(ids[1], 1)]


def test_work_the_relay_published_again_is_left_to_its_own_task(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """A comment that fails every time is relayed again and again; it must not take other batches down."""
    first = post(sessions, "c-1", email="a@example.org", ip=None)
    relayed = post(sessions, "c-2", email="b@example.org", ip=None)
    with sessions.begin() as session:
        session.execute(update(OutboxMessage).where(OutboxMessage.comment_id == relayed).values(attempts=1))
        decided = decide_waiting(session, first, active_model.model, NOW, batch_size=20)
    assert [d.comment_id for d in decided] == [first]
    assert decide(sessions, relayed, active_model) is not None


def test_a_message_for_a_settled_comment_costs_a_look_and_takes_no_batch(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    waiting = post(sessions, "c-1")
    decided = post(sessions, "c-2", email="b@example.org", ip=None)
    assert decide(sessions, decided, active_model) is not None
    reviewed = post(sessions, "c-3", email="c@example.org", ip=None, status="approved")  # by a moderator, early
    for settled in (decided, reviewed):
        with sessions.begin() as session:
            assert decide_waiting(session, settled, active_model.model, NOW, batch_size=20) == []
    # No batch was taken on the settled comments' behalf: the waiting one is still waiting for its own task.
    assert sorted(m.comment_id for m in rows(engine, OutboxMessage)) == [waiting]  # the reviewed one's work went
    with sessions.begin() as session:
        assert [d.comment_id for d in decide_waiting(session, waiting, active_model.model, NOW, batch_size=20)] == [
            waiting
        ]


def test_signal_lookups_read_matching_comments_not_the_whole_site_before_statistics_exist() -> None:
    """A new site's burst, before autovacuum has analyzed the table: the lookups go by text, e-mail and IP.

    PostgreSQL without statistics once took the (site, article) index and read all 3,000 comments of the
    site for each comment of a batch (63,000 rows read and thrown away for 20 comments).
    """
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with fresh_postgres_database() as url:
        upgrade_database(url)
        engine = create_db_engine(url)
        try:
            with make_session_factory(engine).begin() as session:
                site_id = create_site(session, SITE)[0].id
            now = datetime.now(UTC)
            columns = {
                "site_id": site_id,
                "article_id": "massage-therapy",
                "body": "A long enough comment to be checked for copies on the site.",
                "status": CommentStatus.PENDING,
                "received_at": now,
                "revision": 0,
            }
            with engine.begin() as connection:
                connection.execute(
                    insert(Comment),
                    [
                        columns
                        | {
                            "external_id": f"c-{n}",
                            "author_email": f"reader{n}@example.org",
                            "author_ip": f"198.51.{n % 200}.{n % 251}",
                            "author_network": f"198.51.{n % 200}.{n % 251}",  # an IPv4 address is its own
                            "body_fingerprint": f"{n:064d}",
                        }
                        for n in range(3000)
                    ],
                )
            statements: list[tuple[str, Any]] = []

            @event.listens_for(engine, "before_cursor_execute")
            def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
                if statement.startswith("SELECT") and "count(" in statement:
                    statements.append((statement, parameters))

            with make_session_factory(engine)() as session:
                batch = list(session.scalars(select(Comment).order_by(Comment.id).limit(20)))
                gather_signals_many(session, batch, now)
            event.remove(engine, "before_cursor_execute", keep)
            assert len(statements) == 2  # the duplicates and the author history
            with engine.connect() as connection:
                for statement, parameters in statements:
                    plan = connection.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters)
                    # A pass or two over the site at most (a hash join), never a pass per comment of the batch.
                    assert _rows_thrown_away(plan.scalar_one()[0]["Plan"]) <= 2 * 3000, statement
        finally:
            engine.dispose()


def _rows_thrown_away(node: dict[str, Any]) -> int:
    own = sum(int(node.get(key, 0)) * int(node.get("Actual Loops", 1)) for key in ("Rows Removed by Filter",))
    own += int(node.get("Rows Removed by Join Filter", 0))
    return own + sum(_rows_thrown_away(child) for child in node.get("Plans", []))


@pytest.mark.parametrize(
    ("flood_address", "other_address"),
    [
        (lambda n: "203.0.113.50", lambda n: f"198.51.100.{n}"),
        # An IPv6 author's other addresses in their /64 are the same author (the author checks count so).
        (lambda n: f"2001:db8:1:2::{n + 1:x}", lambda n: f"2001:db8:1:{n + 3:x}::1"),
    ],
    ids=["one-address", "one-ipv6-64"],
)
def test_one_authors_flood_at_the_head_of_the_queue_does_not_shrink_the_batches_of_others(
    sessions: sessionmaker[Session],
    active_model: TrainedModel,
    flood_address: Callable[[int], str],
    other_address: Callable[[int], str],
) -> None:
    """A batch takes one comment per author; 100 waiting comments from one address (a flood, or a site whose
    proxy sends one IP for everyone) must not leave the other authors behind them to batches of two."""
    flood = [
        post(sessions, f"f-{n}", f"Buy now number {n}", email=f"f{n}@spam.example", ip=flood_address(n))
        for n in range(100)
    ]
    others = [
        post(sessions, f"o-{n}", f"Comment {n} about my back.", email=f"o{n}@example.org", ip=other_address(n))
        for n in range(40)
    ]
    with sessions.begin() as session:
        decided = decide_waiting(session, others[0], active_model.model, NOW, batch_size=20)
    ids = {d.comment_id for d in decided}
    assert len(ids) == 20
    assert len(ids & set(flood)) == 1  # one of the flood's, as for any author
    assert ids - set(flood) <= set(others)


SPAM_TEXT = "Buy cheap viagra and cialis online without prescription, fast shipping, best price guaranteed"
ADVICE_TEXT = "You should take 800mg ibuprofen every 6 hours and stop your blood pressure medication for a week"


@pytest.mark.parametrize("mark", ["\u200b", "\u00ad", "\u2060", "\u200c", "\u034f"])
def test_invisible_characters_inside_words_change_no_score_and_are_held_for_a_person(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel, mark: str
) -> None:
    """Spam with a zero-width space between every letter scored 0.23 and was approved (a security review):
    every score, list and duplicate check now reads the text without them, and the comment is held."""
    ids = {}
    for n, (name, body) in enumerate({"spam": SPAM_TEXT, "advice": ADVICE_TEXT}.items()):
        dressed = " ".join(mark.join(word) for word in body.split())
        ids[name] = post(sessions, f"{name}-plain", body, email=f"p{n}@example.org", ip=f"198.51.100.{n}")
        ids[f"{name}-dressed"] = post(
            sessions, f"{name}-dressed", dressed, email=f"d{n}@example.org", ip=f"198.51.100.{n + 10}"
        )
    decided = {name: decide(sessions, comment_id, active_model) for name, comment_id in ids.items()}
    assert all(decided.values())
    current = {name: rows(engine, Decision, comment_id=i, is_current=True)[0] for name, i in ids.items()}
    for name in ("spam", "advice"):
        plain, dressed = current[name], current[f"{name}-dressed"]
        assert (dressed.spam_score, dressed.advice_score) == pytest.approx((plain.spam_score, plain.advice_score))
        # held for its scores in any case; a soft hyphen, which copied pages leave between letters, holds nothing
        assert ("hidden_characters" in dressed.reasons) == (mark != "\u00ad") and dressed.outcome != "approve"
        assert "duplicate" in dressed.reasons  # the same text as the plain one, to the duplicate check too
    assert current["spam-dressed"].outcome == "reject"  # spam is still rejected: the hold adds to it
    assert rows(engine, Comment, id=ids["spam-dressed"])[0].body.count(mark) > 10  # stored and shown as sent


def test_a_repeated_delivery_in_flight_does_not_keep_its_comment_from_being_decided(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel
) -> None:
    """A site's retry of a delivery records its receipt while the first one's classify task runs: inserting a
    row that refers to the comment locks it FOR KEY SHARE, and the task's FOR UPDATE SKIP LOCKED took that for
    another worker deciding it, so the decision waited some 30 s for the relay (a site integrator's test)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks: on SQLite the repeat's transaction holds the whole database's write lock")
    comment_id = post(sessions, "c-1")
    with sessions() as repeat:
        site_id = repeat.get_one(Comment, comment_id).site_id
        record_receipt(repeat, site_id, "wh-repeat", comment_id, NOW, None)
        repeat.flush()  # the receipt is inserted and its transaction left open
        with sessions.begin() as worker:
            decided = decide_waiting(worker, comment_id, active_model.model, NOW, batch_size=20)
        assert [d.comment_id for d in decided] == [comment_id]
        repeat.commit()
    assert len(rows(engine, Decision, comment_id=comment_id, is_current=True)) == 1


def test_candidates_decided_meanwhile_are_made_up_for(
    engine: Engine, sessions: sessionmaker[Session], active_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A candidate another worker decided between the candidate read and the lock took a place in the batch and
    was then dropped (a cold review): the lock now asks for comments still pending, and the next ones fill in."""
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks: on SQLite a second writer waits for the first instead")
    ids = [
        post(sessions, f"c-{n}", f"Comment number {n} about my back.", email=f"r{n}@example.org", ip=f"198.51.100.{n}")
        for n in range(7)
    ]
    real_take = decisions_module._take_comments
    decided_meanwhile: list[int] = []

    def decide_three_first(session: Session, query: Any) -> list[Comment]:
        if not decided_meanwhile and "outbox" not in str(query):
            decided_meanwhile.extend(ids[1:4])
            with sessions.begin() as other:
                other.execute(update(Comment).where(Comment.id.in_(ids[1:4])).values(status="approved"))
        return real_take(session, query)

    with sessions.begin() as session:
        own = decisions_module._take_comments(session, select(Comment).where(Comment.id == ids[0]))
        monkeypatch.setattr(decisions_module, "_take_comments", decide_three_first)
        taken = decisions_module._take_waiting(session, own, ids[0], 3)
    assert [c.id for c in taken] == ids[4:7]
