"""A classify message whose text a batch already decided costs no database work; anything else still does."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from models.db import make_session_factory
from models.entities import Comment, Decision
from moderation import settled
from moderation.intake import NewComment, accept_comment
from moderation.lifecycle import apply_update
from moderation.settled import SettledWork
from moderation.sites import create_site, require_site
from server.factory import build_celery
from server.settings import Settings
from tests.conftest import TrainedModel
from tests.support.services import free_port
from workers.app import ModerationCelery
from workers.tasks import classify_comment

SITE = "backpain-advisor"
NOW = datetime.now(UTC).replace(microsecond=0)


def test_a_decided_revision_is_known_to_every_worker_through_redis(redis_url: str) -> None:
    one, other = SettledWork(redis_url), SettledWork(redis_url)
    one.remember([(7, 0), (8, 2)])
    assert one.is_settled(7, 0) and other.is_settled(7, 0) and other.is_settled(8, 2)
    assert not other.is_settled(7, 1)  # an edit's new text was never decided
    assert not other.is_settled(9, 0)


def test_without_redis_a_worker_remembers_its_own_decisions_only() -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    one, other = SettledWork(unreachable), SettledWork(unreachable)
    one.remember([(7, 0)])  # the failed write is logged, not raised
    assert one.is_settled(7, 0)
    assert not other.is_settled(7, 0)
    alone = SettledWork(None)
    alone.remember([(1, 0)])
    assert alone.is_settled(1, 0) and not alone.is_settled(1, 1)


def test_local_memory_keeps_the_newest_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settled, "LOCAL_ENTRIES", 3)
    work = SettledWork(None)
    work.remember((n, 0) for n in range(5))
    assert [work.is_settled(n, 0) for n in range(5)] == [False, False, True, True, True]


@pytest.fixture
def celery(settings: Settings, active_model: TrainedModel) -> Iterator[ModerationCelery]:
    app = build_celery(settings)
    yield app
    _new_process(app)


def _new_process(celery: ModerationCelery) -> None:
    """As another worker process would start: its own runtime, nothing in memory."""
    celery.runtime.sessions.kw["bind"].dispose()
    celery.reset_runtime()


def _post(engine: Engine, number: int) -> int:
    with make_session_factory(engine).begin() as session:
        new = NewComment(
            external_id=f"c-{number}",
            article_id="massage-therapy",
            body=f"Massage helped my back a lot ({number}), together with the stretches.",
            author_email=f"reader{number}@example.org",
            author_ip=f"203.0.113.{number}",
            created_at=NOW,
        )
        return accept_comment(session, require_site(session, SITE), f"wh-{number}", new, NOW).comment_id


def _classify(celery: ModerationCelery, comment_id: int, revision: int | None) -> Any:
    task = celery.tasks[classify_comment.name]  # this app's task, with this app's runtime
    return task.apply(kwargs={"comment_id": comment_id, "revision": revision}).get()


def _statements_while(celery: ModerationCelery, action: Any) -> tuple[Any, int]:
    engine = celery.runtime.sessions.kw["bind"]
    seen: list[str] = []

    def count(*_: Any) -> None:
        seen.append("statement")

    event.listen(engine, "before_cursor_execute", count)
    try:
        return action(), len(seen)
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_messages_of_comments_a_batch_decided_skip_the_database(celery: ModerationCelery, engine: Engine) -> None:
    with make_session_factory(engine).begin() as session:
        create_site(session, SITE)
    ids = [_post(engine, number) for number in range(3)]

    first = _classify(celery, ids[0], 0)
    assert len(first.split(",")) == 3  # the batch took the two others waiting

    result, statements = _statements_while(celery, lambda: _classify(celery, ids[1], 0))
    assert (result, statements) == ("settled", 0)
    _new_process(celery)  # it learns what the first one decided from Redis
    result, statements = _statements_while(celery, lambda: _classify(celery, ids[2], 0))
    assert (result, statements) == ("settled", 0)

    # A relayed message names no revision: the database answers, and there is nothing to do.
    result, statements = _statements_while(celery, lambda: _classify(celery, ids[2], None))
    assert result == "skipped" and statements > 0


def test_an_edit_is_classified_although_its_comment_was_decided(celery: ModerationCelery, engine: Engine) -> None:
    with make_session_factory(engine).begin() as session:
        create_site(session, SITE)
    comment_id = _post(engine, 1)
    assert _classify(celery, comment_id, 0) != "settled"
    with make_session_factory(engine).begin() as session:
        edited = NewComment(
            external_id="c-1",
            article_id="massage-therapy",
            body="Edited: forget the physio, take 800mg ibuprofen every six hours for two weeks.",
            author_email="reader1@example.org",
            author_ip="203.0.113.1",
            updated_at=NOW + timedelta(minutes=1),
        )
        accepted = apply_update(session, require_site(session, SITE), "wh-edit", edited, NOW + timedelta(minutes=1))
    assert accepted.queued and accepted.revision == 1

    assert _classify(celery, comment_id, 0) == "settled"  # the old text's duplicate message
    assert _classify(celery, comment_id, accepted.revision) not in ("settled", "skipped")
    with make_session_factory(engine)() as session:
        current = session.scalars(select(Decision).where(Decision.comment_id == comment_id, Decision.is_current))
        assert len(list(current)) == 1
        assert session.get_one(Comment, comment_id).revision == 1
