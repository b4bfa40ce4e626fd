"""Threshold choice on validation scores: the least leak within the review-load limit, then the least load."""

from __future__ import annotations

import pytest

from moderation.classifier import Scores
from moderation.data import TRAIN, Example
from moderation.evaluation import Scored
from moderation.features import CommentText
from moderation.training import Targets, choose_thresholds


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


def test_rejects_start_above_every_comment_in_validation_that_is_not_spam() -> None:
    rows = [scored(i, 0.0, bad=False, spam=i / 100) for i in range(71)]  # spam scores up to 0.70
    rows += [scored(100 + i, 0.0, bad=False, spam=0.99, is_spam=True) for i in range(20)]
    thresholds = choose_thresholds(rows)
    assert thresholds.spam_reject == 0.72  # the highest such score, and a margin
    assert thresholds.spam_hold <= thresholds.spam_reject
