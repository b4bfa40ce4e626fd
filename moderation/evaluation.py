"""Quality measures on held-out data: per label and source, and what the policy does at thresholds."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
)

from models.entities import Outcome
from moderation.classifier import LABELS, ModerationModel, Scores
from moderation.data import Example, fingerprint_hashes
from moderation.policy import Signals, Thresholds, decide


@dataclass(frozen=True, slots=True)
class Scored:
    example: Example
    scores: Scores


def score_examples(model: ModerationModel, examples: Sequence[Example], batch: int = 2000) -> list[Scored]:
    scored: list[Scored] = []
    for start in range(0, len(examples), batch):
        chunk = examples[start : start + batch]
        scored += [Scored(e, s) for e, s in zip(chunk, model.score_many([e.comment for e in chunk]), strict=True)]
    return scored


def trained_on(model: ModerationModel, examples: Sequence[Example]) -> np.ndarray | None:
    """Per example, whether its text was among the model's training rows; None when the model keeps no record
    of them (saved before it did): then nobody can tell."""
    if model.trained_fingerprints is None:
        return None
    return np.isin(fingerprint_hashes(e.comment.body for e in examples), model.trained_fingerprints)


def not_trained_on(model: ModerationModel, examples: Sequence[Example]) -> list[Example]:
    """The examples whose text was not among the model's training rows (all of them when it keeps no record)."""
    seen = trained_on(model, examples)
    if seen is None:
        return list(examples)
    return [e for e, was_trained_on in zip(examples, seen, strict=True) if not was_trained_on]


def label_metrics(truth: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, Any]:
    predicted = probability >= threshold
    precision, recall, f1, _ = precision_recall_fscore_support(truth, predicted, average="binary", zero_division=0.0)
    matrix = confusion_matrix(truth, predicted, labels=[False, True])
    has_both = 0 < truth.sum() < len(truth)
    return {
        "n": len(truth),
        "positives": int(truth.sum()),
        "precision": round(float(precision), 4),
        "recall": round(float(recall), 4),
        "f1": round(float(f1), 4),
        "pr_auc": round(float(average_precision_score(truth, probability)), 4) if has_both else None,
        "confusion": {
            "tn": int(matrix[0, 0]),
            "fp": int(matrix[0, 1]),
            "fn": int(matrix[1, 0]),
            "tp": int(matrix[1, 1]),
        },
        "threshold": threshold,
    }


def rate_interval(count: int, total: int) -> tuple[float, float]:
    """95% Wilson interval of ``count / total``: how far a rate measured on this many comments can be trusted."""
    interval = binomtest(count, total).proportion_ci(confidence_level=0.95, method="wilson")
    return round(float(interval.low), 4), round(float(interval.high), 4)


def f1_interval(confusion: dict[str, int], resamples: int = 4000) -> tuple[float, float]:
    """95% bootstrap interval of F1: the comments drawn again with replacement, as counts per confusion cell."""
    cells = np.array([confusion["tp"], confusion["fp"], confusion["fn"], confusion["tn"]], dtype=float)
    total = int(cells.sum())
    if not total:
        return 0.0, 0.0
    drawn = np.random.default_rng(0).multinomial(total, cells / total, size=resamples)
    tp, fp, fn = drawn[:, 0], drawn[:, 1], drawn[:, 2]
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(resamples), where=denominator > 0)
    low, high = np.percentile(f1, [2.5, 97.5])
    return round(float(low), 4), round(float(high), 4)


LABEL_THRESHOLD = 0.5  # when a model stores no F1-chosen threshold for a label


def policy_threshold(label: str, thresholds: Thresholds) -> float:
    """Where the policy starts to act on a label (hold)."""
    return thresholds.spam_hold if label == "spam" else thresholds.advice_hold


def metrics_by_source(
    scored: Sequence[Scored], thresholds: Thresholds, label_thresholds: dict[str, float] | None = None
) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Scored]] = defaultdict(list)
    for item in scored:
        groups[item.example.source].append(item)
    report: dict[str, dict[str, Any]] = {}
    for source, items in sorted(groups.items()):
        report[source] = {}
        for label in LABELS:
            rows = [i for i in items if i.example.label(label) is not None]
            if not rows:
                continue
            truth = np.array([bool(i.example.label(label)) for i in rows])
            probability = np.array([getattr(i.scores, label) for i in rows])
            metrics = label_metrics(truth, probability, (label_thresholds or {}).get(label, LABEL_THRESHOLD))
            at_policy = label_metrics(truth, probability, policy_threshold(label, thresholds))
            metrics["at_policy_threshold"] = {k: at_policy[k] for k in ("threshold", "precision", "recall", "f1")}
            report[source][label] = metrics
    return report


def fully_labeled(scored: Sequence[Scored]) -> list[Scored]:
    """The comments the policy can be judged on: a comment is ordinary only if it is known to be neither."""
    return [i for i in scored if i.example.spam is not None and i.example.medical_advice is not None]


def policy_outcomes(labeled: Sequence[Scored], thresholds: Thresholds) -> list[Outcome]:
    return [decide(i.scores, thresholds, Signals.of_text(i.example.comment.body)).outcome for i in labeled]


def policy_metrics(scored: Sequence[Scored], thresholds: Thresholds) -> dict[str, Any]:
    """Leak rate, auto-rejects of ordinary comments and review load, on fully labeled examples."""
    labeled = fully_labeled(scored)
    outcomes = policy_outcomes(labeled, thresholds)
    bad = [o for i, o in zip(labeled, outcomes, strict=True) if i.example.spam or i.example.medical_advice]
    ordinary = [
        o for i, o in zip(labeled, outcomes, strict=True) if not i.example.spam and not i.example.medical_advice
    ]
    advice = [o for i, o in zip(labeled, outcomes, strict=True) if i.example.medical_advice]

    def rate(items: list[Outcome], outcome: Outcome) -> float | None:
        return round(sum(o == outcome for o in items) / len(items), 4) if items else None

    counted = {"leak_rate": (bad, Outcome.APPROVE), "ordinary_rejected": (ordinary, Outcome.REJECT)}
    counted["ordinary_held"] = (ordinary, Outcome.HOLD)
    return {
        "n": len(labeled),
        "leak_rate": rate(bad, Outcome.APPROVE),
        "ordinary_rejected": rate(ordinary, Outcome.REJECT),
        "ordinary_held": rate(ordinary, Outcome.HOLD),
        "advice_auto_approved": rate(advice, Outcome.APPROVE),
        "review_load": rate(outcomes, Outcome.HOLD),
        # of how many: a rate on 40 comments says less than one on 1,000
        "counts": {name: [sum(o == hit for o in items), len(items)] for name, (items, hit) in counted.items()},
        "thresholds": {
            "spam_reject": thresholds.spam_reject,
            "spam_hold": thresholds.spam_hold,
            "advice_hold": thresholds.advice_hold,
        },
    }


# --- the comments behind the numbers: the worst mistakes, for a person to read --------------------------

MISTAKES_SHOWN = 20


@dataclass(frozen=True, slots=True)
class LabelMistakes:
    missed: list[Scored]  # positives below the yes/no line, lowest score first
    flagged: list[Scored]  # negatives at or above it, highest score first


def label_mistakes(
    scored: Sequence[Scored], label: str, threshold: float, limit: int | None = MISTAKES_SHOWN
) -> LabelMistakes:
    """The worst false negatives and false positives of one label at its yes/no line."""
    rows = [s for s in scored if s.example.label(label) is not None]
    missed = [s for s in rows if s.example.label(label) and getattr(s.scores, label) < threshold]
    flagged = [s for s in rows if not s.example.label(label) and getattr(s.scores, label) >= threshold]
    missed.sort(key=lambda s: float(getattr(s.scores, label)))
    flagged.sort(key=lambda s: -float(getattr(s.scores, label)))
    return LabelMistakes(missed[:limit], flagged[:limit])


@dataclass(frozen=True, slots=True)
class PolicyMistakes:
    leaked: list[Scored]  # spam or medical advice approved, the least suspected first
    ordinary_rejected: list[Scored]  # neither, yet rejected, the highest spam score first


def policy_mistakes(
    scored: Sequence[Scored], thresholds: Thresholds, limit: int | None = MISTAKES_SHOWN
) -> PolicyMistakes:
    """The comments behind the leak rate and the auto-rejects of ordinary comments."""
    labeled = fully_labeled(scored)
    decided = list(zip(labeled, policy_outcomes(labeled, thresholds), strict=True))
    leaked = [s for s, o in decided if (s.example.spam or s.example.medical_advice) and o == Outcome.APPROVE]
    rejected = [s for s, o in decided if not s.example.spam and not s.example.medical_advice and o == Outcome.REJECT]
    leaked.sort(key=_suspicion)
    rejected.sort(key=lambda s: -s.scores.spam)
    return PolicyMistakes(leaked[:limit], rejected[:limit])


def _suspicion(item: Scored) -> float:
    """How close a spam or advice comment came to being caught: its highest score among the labels it has."""
    return max(
        item.scores.spam if item.example.spam else 0.0,
        item.scores.medical_advice if item.example.medical_advice else 0.0,
    )


# --- held-out scores kept in the model card, for "what would this threshold do" ---------------------


def evaluation_scores(scored: Sequence[Scored]) -> dict[str, list[Any]]:
    """Compact held-out scores and labels: enough to replay the policy at any thresholds later."""
    rows = [s for s in scored if s.example.spam is not None and s.example.medical_advice is not None]
    return {
        "spam": [round(s.scores.spam, 5) for s in rows],
        "medical_advice": [round(s.scores.medical_advice, 5) for s in rows],
        "is_spam": [bool(s.example.spam) for s in rows],
        "is_medical_advice": [bool(s.example.medical_advice) for s in rows],
        # What the text tells beyond the scores (links, another script...), as the policy read it here.
        **Signals.to_card([Signals.of_text(s.example.comment.body) for s in rows]),
    }


def what_if(card: dict[str, Any], thresholds: Thresholds) -> dict[str, float | None]:
    """Leak rate, review load and auto-rejects the policy would have on the card's held-out comments."""
    data = card.get("evaluation_scores")
    if not data or not data.get("spam"):
        return {"leak_rate": None, "ordinary_held": None, "ordinary_rejected": None, "review_load": None}
    signals = Signals.from_card(data, len(data["spam"]))
    outcomes = [
        decide(Scores(spam=s, medical_advice=a), thresholds, text).outcome
        for s, a, text in zip(data["spam"], data["medical_advice"], signals, strict=True)
    ]
    bad = [o for o, s, a in zip(outcomes, data["is_spam"], data["is_medical_advice"], strict=True) if s or a]
    ordinary = [
        o for o, s, a in zip(outcomes, data["is_spam"], data["is_medical_advice"], strict=True) if not s and not a
    ]

    def rate(items: list[Outcome], outcome: Outcome) -> float | None:
        return round(sum(o == outcome for o in items) / len(items), 4) if items else None

    return {
        "leak_rate": rate(bad, Outcome.APPROVE),
        "ordinary_held": rate(ordinary, Outcome.HOLD),
        "ordinary_rejected": rate(ordinary, Outcome.REJECT),
        "review_load": rate(outcomes, Outcome.HOLD),
    }


def pr_curve(card: dict[str, Any], label: str, points: int = 100) -> list[dict[str, float]]:
    """Precision and recall of one label against its threshold, from the card's held-out comments."""
    data = card.get("evaluation_scores") or {}
    truth_key = "is_spam" if label == "spam" else "is_medical_advice"
    truth, probability = np.array(data.get(truth_key, []), dtype=bool), np.array(data.get(label, []))
    if not 0 < truth.sum() < len(truth):
        return []
    precision, recall, cut = precision_recall_curve(truth, probability)
    step = max(1, len(cut) // points)
    return [
        {"precision": round(float(p), 4), "recall": round(float(r), 4), "threshold": round(float(t), 4)}
        for p, r, t in list(zip(precision[:-1], recall[:-1], cut, strict=True))[::step]
    ]
