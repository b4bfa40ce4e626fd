"""Quality measures on held-out data: per label and source, and what the policy does at thresholds."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_fscore_support

from models.entities import Outcome
from moderation.classifier import LABELS, ModerationModel, Scores
from moderation.data import Example
from moderation.features import link_count
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


def label_threshold(label: str, thresholds: Thresholds) -> float:
    # Spam's classification threshold is where the policy starts to act on it (hold).
    return thresholds.spam_hold if label == "spam" else thresholds.advice_hold


def metrics_by_source(scored: Sequence[Scored], thresholds: Thresholds) -> dict[str, dict[str, Any]]:
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
            report[source][label] = label_metrics(truth, probability, label_threshold(label, thresholds))
    return report


def policy_metrics(scored: Sequence[Scored], thresholds: Thresholds) -> dict[str, Any]:
    """Leak rate, auto-rejects of ordinary comments and review load, on fully labeled examples."""
    labeled = [i for i in scored if i.example.spam is not None and i.example.medical_advice is not None]
    outcomes = [
        decide(i.scores, thresholds, Signals(link_count=link_count(i.example.comment.body))).outcome for i in labeled
    ]
    bad = [o for i, o in zip(labeled, outcomes, strict=True) if i.example.spam or i.example.medical_advice]
    ordinary = [
        o for i, o in zip(labeled, outcomes, strict=True) if not i.example.spam and not i.example.medical_advice
    ]
    advice = [o for i, o in zip(labeled, outcomes, strict=True) if i.example.medical_advice]

    def rate(items: list[Outcome], outcome: Outcome) -> float | None:
        return round(sum(o == outcome for o in items) / len(items), 4) if items else None

    return {
        "n": len(labeled),
        "leak_rate": rate(bad, Outcome.APPROVE),
        "ordinary_rejected": rate(ordinary, Outcome.REJECT),
        "ordinary_held": rate(ordinary, Outcome.HOLD),
        "advice_auto_approved": rate(advice, Outcome.APPROVE),
        "review_load": rate(outcomes, Outcome.HOLD),
        "thresholds": {
            "spam_reject": thresholds.spam_reject,
            "spam_hold": thresholds.spam_hold,
            "advice_hold": thresholds.advice_hold,
        },
    }
