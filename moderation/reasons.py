"""Every reason a decision can carry, in one place: the policy's and the moderators' own, with display labels.

A decision's reasons are stored, sent in callbacks and answered by the pull API as these plain values; the
OpenAPI document enumerates them from here (webhooks/openapi.py), the dashboard offers and filters on them.
Standard library only, so every layer can import the vocabulary without the classifier or the database.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why the policy did not simply approve a comment: stored with its decision, shown and filtered on in the
    dashboard.

    The one list of them (the policy table in docs/architecture.md is checked against it). Stored as their plain
    values.
    """

    BLOCKED_TERM = "blocked_term"
    SPAM = "spam"
    POSSIBLE_SPAM = "possible_spam"
    UNFAMILIAR_LANGUAGE = "unfamiliar_language"
    MEDICAL_ADVICE = "medical_advice"
    MANY_LINKS = "many_links"
    HIDDEN_CHARACTERS = "hidden_characters"
    DUPLICATE = "duplicate"
    AUTHOR_FLOOD = "author_flood"
    AUTHOR_REJECTED_BEFORE = "author_rejected_before"
    # Not from ``decide``: moderation.decisions adds it when an edit follows a moderator's verdict.
    EDITED_AFTER_REVIEW = "edited_after_review"
    # Not from ``decide``: the comment's classification failed run after run, so a person reads it unscored.
    NOT_CLASSIFIED = "not_classified"


class ModeratorReason(StrEnum):
    """Reasons only a moderator gives, rejecting a comment; spam and medical advice are ``Reason`` values."""

    ABUSE = "abuse"
    OFF_TOPIC = "off_topic"
    OTHER = "other"


REASON_LABELS: dict[str, str] = {
    Reason.BLOCKED_TERM: "Blocked term",
    Reason.SPAM: "Spam",
    Reason.POSSIBLE_SPAM: "Possible spam",
    Reason.UNFAMILIAR_LANGUAGE: "Unfamiliar language",
    Reason.MEDICAL_ADVICE: "Medical advice",
    Reason.MANY_LINKS: "Many links",
    Reason.HIDDEN_CHARACTERS: "Hidden characters",
    Reason.DUPLICATE: "Duplicate",
    Reason.AUTHOR_FLOOD: "Author flood",
    Reason.AUTHOR_REJECTED_BEFORE: "Author rejected before",
    Reason.EDITED_AFTER_REVIEW: "Edited after review",
    Reason.NOT_CLASSIFIED: "Not classified",
    ModeratorReason.ABUSE: "Abuse",
    ModeratorReason.OFF_TOPIC: "Off-topic",
    ModeratorReason.OTHER: "Other",
}

# What a decision can carry: the policy's reasons, then the moderators' own (no value is in both enums).
ALL_REASONS: tuple[str, ...] = tuple(reason.value for reason in (*Reason, *ModeratorReason))

# A moderator's choices when rejecting, in the order the dashboard offers them (keys 1 to 5), with their labels.
REJECT_REASONS: dict[str, str] = {
    reason.value: REASON_LABELS[reason] for reason in (Reason.SPAM, Reason.MEDICAL_ADVICE, *ModeratorReason)
}


def reason_label(value: str) -> str:
    """How the dashboard names a stored reason; a value no longer in either enum, as it is, readable."""
    return REASON_LABELS.get(value, value.replace("_", " "))
