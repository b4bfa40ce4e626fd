"""Train both classifiers, choose thresholds on validation data, measure on held-out data, write a card.

Splits: the own corpus keeps a fixed held-out quarter (by text hash); of the rest, a fifth is the
validation set that thresholds are chosen on, by a model that never saw it; the final model is then fit
on all training rows and keeps those thresholds. Public sets keep their own held-out parts (a whole
YouTube video, the forum set's test split, a hashed fifth of the others). No metric in the card is
measured on rows the model was trained on.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import scipy
import sklearn
import skops
from tqdm import tqdm

from moderation.classifier import LABELS, ModerationModel, fit_model
from moderation.data import DEV, TEST, TRAIN, Example, hash_split
from moderation.evaluation import Scored, metrics_by_source, policy_metrics, score_examples
from moderation.features import link_count, prepare
from moderation.policy import PolicyLimits, Thresholds

SOURCE_WEIGHTS = {
    "own": 4.0,
    "moderator": 4.0,
    "youtube": 1.0,
    "sms": 0.5,
    "reddit": 0.5,
    "health_advice": 0.3,
    "medquad": 0.5,
}
VALIDATION_PERCENT = 20


@dataclass(frozen=True, slots=True)
class Targets:
    """DESIGN section 7, with margin for data the model has never seen."""

    max_leak: float = 0.02
    max_ordinary_rejected: float = 0.005
    max_ordinary_held: float = 0.08


def source_family(source: str) -> str:
    return source.split(":", 1)[0]


def split_rows(examples: Sequence[Example]) -> tuple[list[Example], list[Example], list[Example]]:
    """(fit, validation, test): validation is a hashed fifth of the in-domain training rows."""
    fit, validation, test = [], [], []
    for example in examples:
        if example.split == TEST:
            test.append(example)
        elif (
            source_family(example.source) in ("own", "moderator")
            and hash_split(example.comment.body, VALIDATION_PERCENT, salt="validation") == TEST
        ):
            validation.append(example)
        elif example.split in (TRAIN, DEV):
            fit.append(example)
    return fit, validation, test


def fit_examples(examples: Sequence[Example], random_state: int = 0, progress: Any = None) -> ModerationModel:
    texts = [prepare(e.comment) for e in examples]
    labels, masks, weights = {}, {}, {}
    source_weight = np.array([SOURCE_WEIGHTS.get(source_family(e.source), 1.0) for e in examples])
    for label in LABELS:
        values = [e.label(label) for e in examples]
        masks[label] = np.array([v is not None for v in values])
        labels[label] = np.array([bool(v) for v in values])
        weights[label] = source_weight
    return fit_model(texts, labels, weights=weights, masks=masks, random_state=random_state, progress=progress)


def choose_thresholds(
    scored: Sequence[Scored], targets: Targets = Targets(), limits: PolicyLimits = PolicyLimits()
) -> Thresholds:
    """Lowest leak rate whose review load of ordinary comments stays within target."""
    rows = [s for s in scored if s.example.spam is not None and s.example.medical_advice is not None]
    if not rows:
        return Thresholds()
    spam = np.array([s.scores.spam for s in rows])
    advice = np.array([s.scores.medical_advice for s in rows])
    is_spam = np.array([bool(s.example.spam) for s in rows])
    is_bad = is_spam | np.array([bool(s.example.medical_advice) for s in rows])
    links_hold = np.array([link_count(s.example.comment.body) >= limits.max_links for s in rows])
    ordinary = ~is_bad

    spam_reject = _reject_threshold(spam[~is_spam], targets.max_ordinary_rejected)
    grid = np.round(np.arange(0.05, 0.96, 0.01), 2)
    best: tuple[float, float, float, float] | None = None  # (leak, held, spam_hold, advice_hold)
    for spam_hold in grid[grid <= spam_reject]:
        spam_flag = spam >= spam_hold
        for advice_hold in grid:
            held_or_rejected = spam_flag | (advice >= advice_hold) | links_hold
            held = float(held_or_rejected[ordinary].mean()) if ordinary.any() else 0.0
            if held > targets.max_ordinary_held:
                continue
            leak = float((~held_or_rejected[is_bad]).mean()) if is_bad.any() else 0.0
            candidate = (leak, held, float(spam_hold), float(advice_hold))
            if best is None or candidate[:2] < best[:2]:
                best = candidate
    if best is None:
        return Thresholds(spam_reject=spam_reject, spam_hold=min(0.5, spam_reject), advice_hold=0.5)
    return Thresholds(spam_reject=spam_reject, spam_hold=best[2], advice_hold=best[3])


def _reject_threshold(not_spam_scores: np.ndarray, max_rate: float) -> float:
    """High enough that at most ``max_rate`` of comments that are not spam would be rejected, with margin."""
    if not len(not_spam_scores):
        return 0.9
    quantile = float(np.quantile(not_spam_scores, 1.0 - max_rate / 2))
    return float(np.clip(round(max(quantile, not_spam_scores.max()) + 0.02, 2), 0.6, 0.98))


def train(examples: Sequence[Example], random_state: int = 0, show_progress: bool = True) -> ModerationModel:
    fit_rows, validation, test = split_rows(examples)
    if not fit_rows:
        raise ValueError("no training rows")
    steps = 2 * (1 + len(LABELS)) + 2
    with tqdm(total=steps, desc="training", unit="step", disable=not show_progress) as progress:
        probe = fit_examples(fit_rows, random_state, progress)
        thresholds = choose_thresholds(score_examples(probe, validation))
        validation_report = policy_metrics(score_examples(probe, validation), thresholds)
        progress.update(1)
        model = fit_examples(fit_rows + validation, random_state, progress)
        test_scored = score_examples(model, test)
        progress.update(1)
    model.card = build_card(
        model, fit_rows + validation, test, test_scored, thresholds, validation_report, random_state
    )
    return model


def build_card(
    model: ModerationModel,
    trained_on: Sequence[Example],
    test: Sequence[Example],
    test_scored: Sequence[Scored],
    thresholds: Thresholds,
    validation_report: dict[str, Any],
    random_state: int,
) -> dict[str, Any]:
    own_test = [s for s in test_scored if source_family(s.example.source) == "own"]
    return {
        "created_at": datetime.now(UTC).isoformat(),
        "thresholds": {
            "spam_reject": thresholds.spam_reject,
            "spam_hold": thresholds.spam_hold,
            "advice_hold": thresholds.advice_hold,
        },
        "data": {
            "trained_on": dict(sorted(Counter(e.source for e in trained_on).items())),
            "held_out": dict(sorted(Counter(e.source for e in test).items())),
            "source_weights": SOURCE_WEIGHTS,
        },
        "metrics": {
            "held_out_by_source": metrics_by_source(test_scored, thresholds),
            "policy_own_held_out": policy_metrics(own_test, thresholds),
            "policy_validation": validation_report,
        },
        "libraries": {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "skops": skops.__version__,
        },
        "random_state": random_state,
    }
