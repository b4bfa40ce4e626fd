"""Moderator verdicts as training labels, and the rule that keeps a worse retrained model inactive."""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from models.db import make_session_factory
from models.entities import TrainingLabel
from moderation import learning, registry
from moderation.data import TEST, TRAIN, Example, fingerprint_set, load_own_corpus
from moderation.evaluation import not_trained_on
from moderation.intake import NewComment, accept_comment
from moderation.learning import compare_on_held_out, held_out_measures, moderator_examples, not_worse, retrain
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
    """What `held_out_measures` gives (the card's metrics have the same shape)."""
    return {
        "policy_own_held_out": {"leak_rate": leak, "ordinary_held": held, "ordinary_rejected": 0.0},
        "held_out_by_source": {"own": {"medical_advice": {"pr_auc": auc}}},
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


def test_a_source_measured_for_the_active_model_only_is_a_problem_not_a_pass() -> None:
    active = card(0.030, 0.080, 0.950)
    active["held_out_by_source"] = {"own": {}, "youtube:Eminem": {"spam": {"pr_auc": 0.99}}}
    found = not_worse(card(0.030, 0.080, 0.950), active)
    assert found == ["youtube:Eminem spam PR-AUC not measured for the candidate (0.9900 before)"]


def held_out_rows() -> list[Example]:
    return [e for e in load_own_corpus() if e.split == TEST]


def test_the_gate_scores_both_models_on_the_same_rows_not_the_cards(trained_model: TrainedModel) -> None:
    """The active card claims a perfect model; scored on the same rows, the same model is not worse than itself."""
    claims = copy.deepcopy(trained_model.model.card)
    claims["metrics"]["policy_own_held_out"].update(leak_rate=0.0, ordinary_held=0.0)
    claims["metrics"]["held_out_by_source"]["own"]["spam"]["pr_auc"] = 1.0
    active = replace(trained_model.model, card=claims)
    assert not_worse(trained_model.model.card["metrics"], claims["metrics"])  # comparing cards: "worse"
    assert compare_on_held_out(trained_model.model, active, load_own_corpus()) == []


def test_the_gate_measures_each_model_on_the_held_out_rows_at_its_own_thresholds(trained_model: TrainedModel) -> None:
    rows = held_out_rows()
    measured = held_out_measures(trained_model.model, rows)
    assert measured["policy_own_held_out"] == trained_model.model.card["metrics"]["policy_own_held_out"]
    stricter = copy.deepcopy(trained_model.model.card)
    stricter["thresholds"].update(spam_hold=0.99, spam_reject=0.995, advice_hold=0.99)  # holds almost nothing
    worse = held_out_measures(replace(trained_model.model, card=stricter), rows)
    found = not_worse(worse, measured)
    assert any(problem.startswith("leak_rate ") for problem in found), found


def test_sources_the_active_model_was_measured_on_but_the_retraining_lacks_are_problems(
    trained_model: TrainedModel,
) -> None:
    """Trained with the public sets, retrained without DATA_DIR: the YouTube video cannot be checked."""
    with_public = copy.deepcopy(trained_model.model.card)
    with_public["metrics"]["held_out_by_source"]["youtube:Eminem"] = {"spam": {"pr_auc": 0.99, "f1": 0.953}}
    active = replace(trained_model.model, card=with_public)
    found = compare_on_held_out(trained_model.model, active, load_own_corpus())
    assert len(found) == 1 and found[0].startswith("not checked on youtube:Eminem: the active model was measured")
    assert "DATA_DIR" in found[0]


def poison(engine: Engine, count: int = 300) -> None:
    """Moderator labels that call spam ordinary: a model trained with them lets spam through."""
    spam = [e.comment.body for e in load_own_corpus() if e.split == TRAIN and e.spam][:count]
    for number, body in enumerate(spam):
        label(engine, 1000 + number, body, False, False)


@pytest.mark.slow
@pytest.mark.timeout(900)  # trains a whole model (two folds, as the session's), besides the session's model
def test_retrain_keeps_a_candidate_worse_on_the_same_held_out_rows_inactive(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path
) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("trains a whole model; the database's part is the same on both, so PostgreSQL only")
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        registry.register(session, "good", trained_model.artifact, trained_model.model.card)
        registry.activate(session, "good")
    poison(engine)
    result = retrain(sessions, tmp_path / "models", None, folds=2)
    assert not result.activated
    assert any(p.startswith(("leak_rate", "own spam PR-AUC")) for p in result.problems), result.problems
    with sessions() as session:
        active = registry.active_version(session)
        assert active is not None and active.version == "good"
        assert result.version in [row.version for row in registry.list_versions(session)]


@pytest.mark.slow
@pytest.mark.timeout(900)  # trains a whole model (two folds, as the session's), besides the session's model
def test_retrain_does_not_replace_an_active_model_it_cannot_load(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path
) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("trains a whole model; the database's part is the same on both, so PostgreSQL only")
    sessions = make_session_factory(engine)
    lost = tmp_path / "lost.skops"
    shutil.copy(trained_model.artifact.path, lost)
    with sessions.begin() as session:
        registry.register(session, "lost", registry.SavedArtifact(lost, trained_model.artifact.sha256), {})
        registry.activate(session, "lost")
    lost.unlink()
    result = retrain(sessions, tmp_path / "models", None, folds=2)
    assert not result.activated
    assert len(result.problems) == 1
    assert result.problems[0].startswith("the active model lost cannot be loaded to compare with (model file lost")
    with sessions() as session:
        active = registry.active_version(session)
        assert active is not None and active.version == "lost"


def test_the_gate_leaves_out_rows_whose_text_either_model_was_trained_on(trained_model: TrainedModel) -> None:
    """As the card and `evaluate` do: a model trained on the held-out texts cannot be measured on them. With no
    held-out own row left, the gate says it could not check the own corpus, whichever model saw them."""
    corpus = load_own_corpus()
    held_out = [e for e in corpus if e.split == TEST]
    trained = trained_model.model.trained_fingerprints
    assert trained is not None
    half = replace(
        trained_model.model,
        trained_fingerprints=np.union1d(trained, fingerprint_set(e.comment.body for e in held_out[::2])),
    )
    assert len(not_trained_on(half, held_out)) == len(held_out) - len(held_out[::2])
    saw_all = replace(trained_model.model, trained_fingerprints=fingerprint_set(e.comment.body for e in held_out))
    unchecked = [
        "not checked on own: the active model was measured there, but this retraining has no such held-out data "
        "(set DATA_DIR to the public data sets)"
    ]
    assert compare_on_held_out(saw_all, trained_model.model, corpus) == unchecked  # the candidate saw them
    assert compare_on_held_out(trained_model.model, saw_all, corpus) == unchecked  # the active model did


# Scheduled retraining gates the candidate against the version active when training started: an operator's
# `models rollback` (or `activate`) made during the minutes of training must not be undone by it.
def test_a_rollback_made_while_retraining_runs_is_not_undone_by_the_retrain(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        registry.register(session, "v1", trained_model.artifact, trained_model.model.card)
        registry.activate(session, "v1")
    with sessions.begin() as session:
        registry.register(session, "v2", trained_model.artifact, trained_model.model.card)
        registry.activate(session, "v2")

    def train_while_the_operator_rolls_back(*_: object, **__: object) -> object:
        # Minutes of training; meanwhile an operator finds v2 bad and rolls back to v1.
        with sessions.begin() as session:
            assert registry.rollback(session).version == "v1"
        # stands in for the trained candidate
        return replace(trained_model.model, card=copy.deepcopy(trained_model.model.card))

    monkeypatch.setattr(learning, "train", train_while_the_operator_rolls_back)
    result = learning.retrain(sessions, tmp_path / "models", None, folds=2)

    with sessions() as session:
        active = registry.active_version(session)
    assert active is not None
    # The operator rolled back to v1; the retrain compared its candidate with v2 only, and must not override
    # the operator's choice with a version never compared with v1.
    assert active.version == "v1", (
        f"retrain activated {active.version} (activated={result.activated}, problems={result.problems}) "
        "over the operator's rollback to v1"
    )
    assert not result.activated
    assert result.problems == [
        "the active version changed while training ran (model v2 was active then, model v1 is now): the new "
        "version was compared with the former only and was not activated; activate it with "
        "`moderation models activate` if it should serve"
    ]
