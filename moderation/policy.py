"""Map calibrated scores and signals beyond the text to approve / hold / reject with reasons.

Pure functions over plain values: the callers gather the signals from the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import Field, dataclass, field, fields
from enum import StrEnum
from typing import Any

from models.entities import Outcome, Site
from moderation.classifier import Scores
from moderation.features import OtherScript, has_hidden_characters, link_count, other_script
from moderation.reasons import Reason


@dataclass(frozen=True, slots=True)
class Thresholds:
    spam_reject: float = 0.9
    spam_hold: float = 0.5
    advice_hold: float = 0.5

    def __post_init__(self) -> None:
        for name in ("spam_reject", "spam_hold", "advice_hold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.spam_hold > self.spam_reject:
            raise ValueError("spam_hold must not be above spam_reject")

    @classmethod
    def of_card(cls, card: Mapping[str, Any]) -> Thresholds:
        """The thresholds a model's card stores (chosen on validation data), or the defaults for a card without."""
        return cls(**card["thresholds"]) if "thresholds" in card else cls()

    def of_site(self, site: Site) -> Thresholds:
        """These thresholds with a site's own values where it set them (the lines that site decides with)."""
        return self.overridden(
            spam_reject=site.spam_reject_threshold,
            spam_hold=site.spam_hold_threshold,
            advice_hold=site.advice_hold_threshold,
        )

    def overridden(
        self, *, spam_reject: float | None, spam_hold: float | None, advice_hold: float | None
    ) -> Thresholds:
        """These thresholds with a site's own values where it set them."""
        hold = self.spam_hold if spam_hold is None else spam_hold
        reject = self.spam_reject if spam_reject is None else spam_reject
        # A site that holds spam only above the model's reject line means "never auto-reject below it".
        return Thresholds(
            spam_reject=max(reject, hold),
            spam_hold=hold,
            advice_hold=self.advice_hold if advice_hold is None else advice_hold,
        )


@dataclass(frozen=True, slots=True)
class Signals:
    """What is known about a comment beyond its words."""

    link_count: int = 0
    blocked_terms: tuple[str, ...] = ()
    duplicates_elsewhere: int = 0
    author_posts_last_hour: int = 0
    author_approved_before: int = 0
    author_rejected_before: int = 0
    author_allowed: bool = False
    other_script: OtherScript = OtherScript.NONE  # how much is in a script the models never learned
    hidden_characters: bool = False  # invisible characters inside a Latin word (features.has_hidden_characters)

    @classmethod
    def of_text(cls, body: str) -> Signals:
        """What the text alone tells, without the database: evaluation, threshold choice and the
        ``moderation classify`` command use it as it is; the service adds what the database knows."""
        return cls(
            link_count=link_count(body), other_script=other_script(body), hidden_characters=has_hidden_characters(body)
        )

    # A model card keeps the signals of its held-out comments, as ``of_text`` read them, for the thresholds page
    # to replay the policy at other thresholds (``moderation.evaluation.what_if``). The round trip is here, over
    # every field, so whatever ``of_text`` comes to read is carried without being named again.

    @staticmethod
    def to_card(signals: Sequence[Signals]) -> dict[str, list[Any]]:
        """One column of JSON values per signal, by its card name, one value per comment; a signal that has its
        default value for every comment is left out (``from_card`` reads a missing column as the default), but
        for the links, which versions before ``from_card`` read without a default."""
        columns: dict[str, list[Any]] = {}
        for one in fields(Signals):
            column = [_card_value(getattr(s, one.name)) for s in signals]
            if one.name in CARD_NAMES or any(value != _card_value(one.default) for value in column):
                columns[CARD_NAMES.get(one.name, one.name)] = column
        return columns

    @classmethod
    def from_card(cls, columns: Mapping[str, Any], count: int) -> list[Signals]:
        """The signals of ``count`` comments from ``to_card``'s columns. A missing column is the signal's default:
        none of the comments had it, or the card is older than the signal (``other_script`` came later)."""
        kept = {one.name: _card_column(one, columns, count) for one in fields(cls)}
        return [cls(**dict(zip(kept, values, strict=True))) for values in zip(*kept.values(), strict=True)]


# A signal's name in a model card where it is not the field's: cards have always called ``link_count`` "links".
# (A new signal named like another column of the card's evaluation scores, ``spam`` say, would need one too.)
CARD_NAMES = {"link_count": "links"}


def _card_value(value: object) -> object:
    """A signal's value as JSON keeps it (``from_card`` rebuilds it with the type of the field's default)."""
    if isinstance(value, StrEnum):
        return str(value)
    return list(value) if isinstance(value, tuple) else value


def _card_column(signal: Field[Any], columns: Mapping[str, Any], count: int) -> list[Any]:
    """One signal's values from a card's column, as the field's type (that of its default: an int, a bool, a
    tuple, an enum); its default for every comment when the card has no such column."""
    default: Any = signal.default
    kept = columns.get(CARD_NAMES.get(signal.name, signal.name))
    return [type(default)(value) for value in kept] if kept else [default] * count


@dataclass(frozen=True, slots=True)
class PolicyLimits:
    max_links: int = 2
    flood_posts_per_hour: int = 10
    rejections_before_suspect: int = 2
    approvals_before_trusted: int = 3


# Trust spares an author these reasons and no others: ``decide`` drops exactly these, and the dashboard's lists
# page shows them, so what an admin reads there is the rule itself. In the order of ``Reason``.
TRUSTED_SKIPS: tuple[Reason, ...] = (Reason.POSSIBLE_SPAM, Reason.MANY_LINKS)
# An allow-listed author is not rejected as spam either; one trusted by their history alone still is.
ALLOW_LISTED_SKIPS: tuple[Reason, ...] = (Reason.SPAM, *TRUSTED_SKIPS)


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reasons: list[Reason] = field(default_factory=list)


def decide(
    scores: Scores, thresholds: Thresholds, signals: Signals = Signals(), limits: PolicyLimits = PolicyLimits()
) -> Verdict:
    """The model never publishes medical advice on its own: advice above threshold is always held.

    Reasons come in a fixed order (rejects, then holds, each in the order ``_found_reasons`` looks for them):
    stored decisions and the sites' callbacks carry the list as it is, so the same comment always reads the same.
    """
    reject, hold = _found_reasons(scores, thresholds, signals, limits)
    skipped = _skipped(signals, limits)
    reject = [reason for reason in reject if reason not in skipped]
    hold = [reason for reason in hold if reason not in skipped]
    if reject:
        return Verdict(Outcome.REJECT, reject + hold)
    if hold:
        return Verdict(Outcome.HOLD, hold)
    return Verdict(Outcome.APPROVE, [])


def _skipped(signals: Signals, limits: PolicyLimits) -> tuple[Reason, ...]:
    """The reasons the author's trust spares their comment (an empty tuple for an author not trusted)."""
    if signals.author_allowed:
        return ALLOW_LISTED_SKIPS
    earned = signals.author_approved_before >= limits.approvals_before_trusted and signals.author_rejected_before == 0
    return TRUSTED_SKIPS if earned else ()


def _found_reasons(
    scores: Scores, thresholds: Thresholds, signals: Signals, limits: PolicyLimits
) -> tuple[list[Reason], list[Reason]]:
    """(reject, hold) reasons as for an author nobody trusts: ``decide`` then drops what trust spares."""
    reject: list[Reason] = []
    hold: list[Reason] = []
    if signals.blocked_terms:
        reject.append(Reason.BLOCKED_TERM)
    # Text the models cannot read goes to a person, never out on its own (advice in it would pass unseen).
    # Mostly such text: neither score means anything, so neither rejects. A passage inside a Latin-script
    # comment: the scores still read the rest, and spam there is still rejected.
    scored = signals.other_script != OtherScript.MOSTLY
    if signals.other_script != OtherScript.NONE:
        hold.append(Reason.UNFAMILIAR_LANGUAGE)
    # One spam reason at most: a score at the reject line is spam, never also possible spam. So an author
    # spared ``spam`` must be spared ``possible_spam`` too, or clear spam would pass unheld (ALLOW_LISTED_SKIPS).
    if scored and scores.spam >= thresholds.spam_reject:
        reject.append(Reason.SPAM)
    elif scored and scores.spam >= thresholds.spam_hold:
        hold.append(Reason.POSSIBLE_SPAM)
    if scored and scores.medical_advice >= thresholds.advice_hold:
        hold.append(Reason.MEDICAL_ADVICE)
    if signals.link_count >= limits.max_links:
        hold.append(Reason.MANY_LINKS)
    # The scores read the text without them, but a person should see who dresses words to slip past filters.
    if signals.hidden_characters:
        hold.append(Reason.HIDDEN_CHARACTERS)
    if signals.duplicates_elsewhere > 0:
        hold.append(Reason.DUPLICATE)
    if signals.author_posts_last_hour >= limits.flood_posts_per_hour:
        hold.append(Reason.AUTHOR_FLOOD)
    if signals.author_rejected_before >= limits.rejections_before_suspect:
        hold.append(Reason.AUTHOR_REJECTED_BEFORE)
    return reject, hold
