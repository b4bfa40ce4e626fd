"""Moderator verdicts as training labels, and the rule that keeps a worse retrained model inactive."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from models.db import make_session_factory
from models.entities import TrainingLabel
from moderation import registry
from moderation.intake import NewComment, accept_comment
from moderation.learning import moderator_examples, not_worse, retrain
from moderation.sites import create_site, get_site
from tests.conftest import TrainedModel


def label(engine: Engine, number: int, body: str, spam: bool | None, advice: bool | None) -> None:
    """A comment in the database with the label a moderator's verdict gave it."""
    with make_session_factory(engine).begin() as session:
        site = get_site(session, "backpain-advisor") or create_site(session, "backpain-advisor")[0]
        new = NewComment(
            external_id=f"c-{number}",
            article_id="massage-therapy",
            body=body,
            author_name="Jan",
            author_email="jan@example.org",
        )
        accepted = accept_comment(session, site, f"msg-{number}", new, datetime.now(UTC))
        session.add(TrainingLabel(comment_id=accepted.comment_id, body=body, spam=spam, medical_advice=advice))


def test_moderator_examples_keep_only_text_and_what_the_verdict_says(engine: Engine) -> None:
    label(engine, 1, "Take 3 of my mum's diazepam, it sorts the spasm", False, True)
    label(engine, 2, "Lovely piece, thanks", False, False)
    label(engine, 3, "You are all idiots", None, None)  # rejected as abuse: says nothing about either label
    with make_session_factory(engine)() as session:
        examples = moderator_examples(session)
    assert [(e.comment.body, e.spam, e.medical_advice, e.source) for e in examples] == [
        ("Take 3 of my mum's diazepam, it sorts the spasm", False, True, "moderator"),
        ("Lovely piece, thanks", False, False, "moderator"),
    ]
    assert all(e.comment.author == e.comment.email == "" for e in examples)


def card(leak: float, held: float, auc: float) -> dict[str, object]:
    return {
        "metrics": {
            "policy_own_held_out": {"leak_rate": leak, "ordinary_held": held, "ordinary_rejected": 0.0},
            "held_out_by_source": {"own": {"medical_advice": {"pr_auc": auc}}},
        }
    }


@pytest.mark.parametrize(
    ("candidate", "problems"),
    [
        (card(0.030, 0.080, 0.950), []),
        (card(0.034, 0.089, 0.941), []),  # within tolerance
        (card(0.040, 0.080, 0.950), ["leak_rate"]),
        (card(0.030, 0.100, 0.950), ["ordinary_held"]),
        (card(0.030, 0.080, 0.930), ["PR-AUC"]),
    ],
)
def test_a_candidate_must_not_be_worse_than_the_active_model(candidate: dict[str, object], problems: list[str]) -> None:
    found = not_worse(candidate, card(0.030, 0.080, 0.950))
    assert len(found) == len(problems) and all(p in f for p, f in zip(problems, found, strict=True))


@pytest.mark.slow
def test_retrain_registers_and_activates_only_when_not_worse(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path
) -> None:
    sessions = make_session_factory(engine)
    worse_than_anything = copy.deepcopy(trained_model.model.card)
    worse_than_anything["metrics"]["policy_own_held_out"].update(leak_rate=0.0, ordinary_held=0.0)
    with sessions.begin() as session:
        registry.register(session, "perfect", trained_model.artifact, worse_than_anything)
        registry.activate(session, "perfect")
    result = retrain(sessions, tmp_path / "models", None)
    assert not result.activated and any("leak_rate" in p or "ordinary_held" in p for p in result.problems)
    with sessions() as session:
        active = registry.active_version(session)
        assert active is not None and active.version == "perfect"
        assert result.version in [row.version for row in registry.list_versions(session)]
