"""Threshold choice on validation scores: the least leak within the review-load limit, then the least load."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio

from moderation import registry
from moderation.classifier import ModerationModel, Scores
from moderation.data import TEST, TRAIN, TRAINING_ONLY_SOURCE, Example, load_own_corpus
from moderation.evaluation import Scored
from moderation.features import CommentText
from moderation.training import (
    Targets,
    choice_rows,
    choose_thresholds,
    fit_examples,
    is_representative,
    train,
)


def scored(n: int, advice: float, *, bad: bool, spam: float = 0.0, is_spam: bool = False) -> Scored:
    example = Example(CommentText(body=f"comment {n}"), is_spam, bad, "own", TRAIN)
    return Scored(example, Scores(spam=spam, medical_advice=advice))


@pytest.fixture
def validation() -> list[Scored]:
    ordinary = [scored(i, i / 100, bad=False) for i in range(100)]  # advice scores 0.00 .. 0.99
    advice = [scored(100 + i, 0.5, bad=True) for i in range(10)] + [scored(200 + i, 0.95, bad=True) for i in range(10)]
    return ordinary + advice


def test_the_review_load_limit_decides_how_low_the_advice_threshold_may_go(validation: list[Scored]) -> None:
    # 10% of ordinary comments may be held: only the advice scored 0.95 can be caught, at the least load
    assert choose_thresholds(validation, Targets(max_ordinary_held=0.10)).advice_hold == 0.95
    # with half of them allowed, everything is caught and the threshold sits just at the lowest advice
    assert choose_thresholds(validation, Targets(max_ordinary_held=0.50)).advice_hold == 0.5


def test_spam_holds_as_low_as_the_review_load_allows() -> None:
    ordinary = [scored(i, 0.0, bad=False, spam=i / 200) for i in range(100)]  # spam scores 0.000 .. 0.495
    spam = [scored(100 + i, 0.0, bad=False, spam=0.45, is_spam=True) for i in range(10)]
    # holding from 0.45 takes the ten ordinary comments scored 0.45 and above (10%) and every spam comment
    assert choose_thresholds(ordinary + spam, Targets(max_ordinary_held=0.10)).spam_hold == 0.45


@pytest.mark.parametrize(
    "body",
    [
        "see http://a.example and http://b.example",  # two links
        "Спасибо за статью, у меня тоже болит спина после работы",  # a script the models never learned
    ],
    ids=["links", "another-script"],
)
def test_comments_the_policy_holds_whatever_the_scores_count_against_the_review_load(body: str) -> None:
    held_anyway = [
        Scored(Example(CommentText(body=f"{body} {n}"), False, False, "own", TRAIN), Scores(0.0, 0.0))
        for n in range(10)
    ]
    plain = [scored(i, i / 100, bad=False) for i in range(90)]  # advice scores 0.00 .. 0.89
    advice = [scored(100 + i, 0.85, bad=True) for i in range(10)]
    # Without those ten, 0.85 would catch all the advice holding 5% of ordinary comments; they hold 10%
    # already, so no ordinary comment more may be held and the advice at 0.85 has to leak.
    assert choose_thresholds(plain + held_anyway + advice, Targets(max_ordinary_held=0.10)).advice_hold == 0.90


def test_the_reject_threshold_ignores_scores_the_policy_never_reads() -> None:
    rows = [scored(i, 0.0, bad=False, spam=0.1) for i in range(99)]
    rows += [scored(100 + i, 0.0, bad=False, spam=0.99, is_spam=True) for i in range(20)]
    # Mostly Cyrillic: held for a person whatever its spam score, which therefore cannot push the line up.
    russian = Example(CommentText(body="Спасибо за статью, очень полезно"), False, False, "own", TRAIN)
    thresholds = choose_thresholds([*rows, Scored(russian, Scores(spam=0.9, medical_advice=0.0))])
    assert thresholds.spam_reject == 0.6  # the floor: the highest score read on a comment not spam is 0.1


def test_rejects_start_above_every_comment_in_validation_that_is_not_spam() -> None:
    rows = [scored(i, 0.0, bad=False, spam=0.1) for i in range(99)] + [scored(99, 0.0, bad=False, spam=0.9)]
    rows += [scored(100 + i, 0.0, bad=False, spam=0.99, is_spam=True) for i in range(20)]
    thresholds = choose_thresholds(rows)
    assert thresholds.spam_reject == 0.92  # above the one high score too (1% of them), with a margin


@pytest.mark.parametrize(
    ("source", "chosen_on"),
    [("own", True), ("moderator", True), (TRAINING_ONLY_SOURCE, False), ("youtube:Psy", False), ("sms", False)],
)
def test_thresholds_are_chosen_on_comments_drawn_as_a_site_gets_them(source: str, chosen_on: bool) -> None:
    assert is_representative(Example(CommentText(body="a comment"), False, False, source, TRAIN)) is chosen_on


def test_thresholds_and_yes_no_lines_are_chosen_on_their_own_rows() -> None:
    sources = ["own", TRAINING_ONLY_SOURCE, "youtube:Psy", "sms"]
    rows = [scored(n, 0.1, bad=False) for n in range(len(sources))]
    validation, sections = choice_rows(
        [Scored(replace(s.example, source=source), s.scores) for s, source in zip(rows, sources, strict=True)]
    )
    assert [s.example.source for s in validation] == ["own"]
    assert [s.example.source for s in sections] == ["own", "youtube:Psy"]


# --- the record of what a model was trained on, saved with it --------------------------------------------


@pytest.fixture(scope="module")
def small_model() -> ModerationModel:
    """A model fit in seconds on a few hundred rows from across the corpus files."""
    rows = [e for e in load_own_corpus() if e.split == TRAIN and e.spam is not None][::12][:300]
    return fit_examples(rows)


def test_the_fingerprints_of_the_training_rows_are_saved_and_loaded_with_the_model(
    small_model: ModerationModel, tmp_path: Path
) -> None:
    artifact = registry.save_artifact(small_model, tmp_path, "v1")
    loaded = registry.load_artifact(artifact.path, artifact.sha256, {})
    assert small_model.trained_fingerprints is not None and len(small_model.trained_fingerprints) > 250
    assert loaded.trained_fingerprints is not None
    assert np.array_equal(loaded.trained_fingerprints, small_model.trained_fingerprints)
    assert loaded.trained_fingerprints.dtype == np.uint64
    # a few kilobytes in the artifact, nothing in the card
    assert "fingerprint" not in json.dumps(small_model.card)


def test_a_model_saved_before_fingerprints_were_kept_still_loads_without_them(
    small_model: ModerationModel, tmp_path: Path
) -> None:
    path = tmp_path / "model-old.skops"
    sio.dump({"vectorizer": small_model.vectorizer, **small_model.classifiers}, path)  # the old payload
    loaded = registry.load_artifact(path, registry.file_sha256(path), {})
    assert loaded.trained_fingerprints is None
    assert loaded.score(CommentText(body="Great article")) == small_model.score(CommentText(body="Great article"))


def test_fingerprints_that_are_not_hashes_are_refused(small_model: ModerationModel, tmp_path: Path) -> None:
    path = tmp_path / "model-odd.skops"
    sio.dump({"vectorizer": small_model.vectorizer, **small_model.classifiers, "trained_fingerprints": ["x"]}, path)
    with pytest.raises(registry.RegistryError, match="not a list of 64-bit hashes"):
        registry.load_artifact(path, registry.file_sha256(path), {})


def test_the_card_leaves_out_held_out_comments_whose_text_was_trained_on() -> None:
    # A held-out row with a training row's text (in the data "good" is both: a held-out own comment and a
    # YouTube training row): `evaluate` leaves such a row out, and the card must count and measure the same rows
    own = load_own_corpus()
    training_rows = [e for e in own if e.split == TRAIN][::8]
    held_out = [e for e in own if e.split == TEST][::20]
    repeated = replace(training_rows[0], source="youtube:Psy", split=TEST)
    model = train([*training_rows, *held_out, repeated], show_progress=False, folds=2)
    assert model.card["data"]["held_out"] == {"own": len(held_out)}
    assert set(model.card["metrics"]["held_out_by_source"]) == {"own"}
