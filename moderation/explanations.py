"""Which words of an explanation a reader is shown: the dashboard's comment card and `classify --explain`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moderation.policy import Thresholds

# The hold line each label's score is read against.
HOLD_LINES = {"spam": "spam_hold", "medical_advice": "advice_hold"}


def worth_reading(score: float | None, hold_line: float) -> bool:
    """A score under half its hold line was driven by nothing worth reading: its top words are filler ("the",
    "is") with tiny weights, which a reader would take for reasons."""
    return score is not None and score >= hold_line / 2


def explanation_worth_reading(
    explanation: Mapping[str, list[dict[str, Any]]], scores: Mapping[str, float | None], lines: Thresholds
) -> dict[str, list[dict[str, Any]]]:
    """``explanation`` with no words for a score under half its hold line (``lines``: those the decision was
    made with); every label is kept, in its order, so its shape is the same whatever the scores."""
    return {label: words if _shown(label, scores.get(label), lines) else [] for label, words in explanation.items()}


def _shown(label: str, score: float | None, lines: Thresholds) -> bool:
    hold_line = HOLD_LINES.get(label)
    return hold_line is None or worth_reading(score, getattr(lines, hold_line))
