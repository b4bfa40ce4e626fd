"""The policy (DESIGN section 4): every reason a comment is held or rejected, and who may skip which."""

from __future__ import annotations

from dataclasses import replace

import pytest

from models.entities import Outcome
from moderation.classifier import Scores
from moderation.features import OtherScript
from moderation.policy import ALLOW_LISTED_SKIPS, TRUSTED_SKIPS, PolicyLimits, Signals, Thresholds, Verdict, decide
from moderation.reasons import Reason

THRESHOLDS = Thresholds(spam_reject=0.9, spam_hold=0.5, advice_hold=0.5)
CLEAN = Scores(spam=0.1, medical_advice=0.1)
TRUSTED = Signals(author_approved_before=3)  # PolicyLimits().approvals_before_trusted


def verdict(scores: Scores = CLEAN, signals: Signals = Signals(), limits: PolicyLimits = PolicyLimits()):  # type: ignore[no-untyped-def]
    return decide(scores, THRESHOLDS, signals, limits)


def test_clean_comment_is_approved_without_reasons() -> None:
    result = verdict()
    assert (result.outcome, result.reasons) == (Outcome.APPROVE, [])


@pytest.mark.parametrize(
    ("spam", "outcome", "reasons"),
    [
        (0.49, Outcome.APPROVE, []),
        (0.5, Outcome.HOLD, ["possible_spam"]),
        (0.89, Outcome.HOLD, ["possible_spam"]),
        (0.9, Outcome.REJECT, ["spam"]),
        (1.0, Outcome.REJECT, ["spam"]),
    ],
)
def test_spam_score_bands(spam: float, outcome: Outcome, reasons: list[str]) -> None:
    result = verdict(Scores(spam=spam, medical_advice=0.0))
    assert (result.outcome, result.reasons) == (outcome, reasons)


def test_medical_advice_is_held_at_its_threshold() -> None:
    assert verdict(Scores(spam=0.0, medical_advice=0.49)).outcome == Outcome.APPROVE
    result = verdict(Scores(spam=0.0, medical_advice=0.5))
    assert (result.outcome, result.reasons) == (Outcome.HOLD, ["medical_advice"])


@pytest.mark.parametrize(
    "signals",
    [TRUSTED, Signals(author_allowed=True), Signals(author_approved_before=50, author_allowed=True)],
    ids=["trusted-by-history", "allow-listed", "both"],
)
def test_medical_advice_is_held_even_for_trusted_authors(signals: Signals) -> None:
    result = verdict(Scores(spam=0.0, medical_advice=0.97), signals)
    assert (result.outcome, result.reasons) == (Outcome.HOLD, ["medical_advice"])


@pytest.mark.parametrize(
    ("signals", "reason"),
    [
        (Signals(link_count=2), "many_links"),
        (Signals(duplicates_elsewhere=1), "duplicate"),
        (Signals(author_posts_last_hour=10), "author_flood"),
        (Signals(author_rejected_before=2), "author_rejected_before"),
        (Signals(hidden_characters=True), "hidden_characters"),
        (Signals(hidden_characters=True, author_allowed=True), "hidden_characters"),
    ],
)
def test_signals_beyond_the_text_hold(signals: Signals, reason: str) -> None:
    result = verdict(CLEAN, signals)
    assert (result.outcome, result.reasons) == (Outcome.HOLD, [reason])


@pytest.mark.parametrize(
    "signals",
    [
        Signals(link_count=1),
        Signals(author_posts_last_hour=9),
        Signals(author_rejected_before=1),
    ],
    ids=["one-link", "nine-posts", "one-rejection"],
)
def test_signals_just_below_their_limits_approve(signals: Signals) -> None:
    assert verdict(CLEAN, signals).outcome == Outcome.APPROVE


def test_limits_come_from_policy_limits() -> None:
    strict = PolicyLimits(max_links=1, flood_posts_per_hour=3, rejections_before_suspect=1)
    result = verdict(CLEAN, Signals(link_count=1, author_posts_last_hour=3, author_rejected_before=1), strict)
    assert result.reasons == ["many_links", "author_flood", "author_rejected_before"]


def test_blocked_term_rejects_and_keeps_the_hold_reasons() -> None:
    result = verdict(Scores(spam=0.95, medical_advice=0.8), Signals(blocked_terms=("casino",), link_count=4))
    assert result.outcome == Outcome.REJECT
    assert result.reasons == ["blocked_term", "spam", "medical_advice", "many_links"]


def test_blocked_term_rejects_even_an_allow_listed_author() -> None:
    result = verdict(CLEAN, Signals(blocked_terms=("casino",), author_allowed=True))
    assert (result.outcome, result.reasons) == (Outcome.REJECT, ["blocked_term"])


def test_trusted_author_skips_possible_spam_and_many_links() -> None:
    signals = Signals(author_approved_before=3, link_count=5)
    assert verdict(Scores(spam=0.7, medical_advice=0.0), signals).outcome == Outcome.APPROVE
    untrusted = verdict(Scores(spam=0.7, medical_advice=0.0), Signals(author_approved_before=2, link_count=5))
    assert untrusted.reasons == ["possible_spam", "many_links"]


def test_trust_by_history_still_rejects_clear_spam() -> None:
    result = verdict(Scores(spam=0.95, medical_advice=0.0), Signals(author_approved_before=40))
    assert (result.outcome, result.reasons) == (Outcome.REJECT, ["spam"])


def test_one_earlier_rejection_takes_trust_away() -> None:
    signals = Signals(author_approved_before=10, author_rejected_before=1, link_count=3)
    result = verdict(Scores(spam=0.6, medical_advice=0.0), signals)
    assert (result.outcome, result.reasons) == (Outcome.HOLD, ["possible_spam", "many_links"])


def test_allow_listed_author_is_never_rejected_or_held_for_spam() -> None:
    for spam in (0.6, 0.95, 1.0):
        result = verdict(Scores(spam=spam, medical_advice=0.0), Signals(author_allowed=True, link_count=4))
        assert (result.outcome, result.reasons) == (Outcome.APPROVE, []), spam


def test_allow_listed_author_is_still_held_for_duplicates_and_floods() -> None:
    signals = Signals(author_allowed=True, duplicates_elsewhere=3, author_posts_last_hour=30)
    result = verdict(CLEAN, signals)
    assert (result.outcome, result.reasons) == (Outcome.HOLD, ["duplicate", "author_flood"])


# --- what trust spares: the policy's constants, which the lists page shows, are what decide() does ------

# Every signal decide() reads past its limit, the advice score too; the spam score either at the reject line or
# in the hold band, since one comment cannot be both.
EVERY_SIGNAL = Signals(
    link_count=5,
    blocked_terms=("casino",),
    duplicates_elsewhere=1,
    author_posts_last_hour=10,
    author_rejected_before=2,
    other_script=OtherScript.PASSAGE,
    hidden_characters=True,
)
SPAM_BANDS = (Scores(spam=0.95, medical_advice=0.9), Scores(spam=0.7, medical_advice=0.9))


def reasons_given(signals: Signals) -> set[Reason]:
    return {reason for scores in SPAM_BANDS for reason in decide(scores, THRESHOLDS, signals).reasons}


def test_an_allow_listed_author_is_spared_exactly_allow_listed_skips() -> None:
    untrusted = reasons_given(EVERY_SIGNAL)
    # Every reason decide() gives is given here, so no reason trust spares can go unseen below (the other two
    # come from moderation.decisions: after a moderator's verdict, or with no scores at all).
    assert untrusted == set(Reason) - {Reason.EDITED_AFTER_REVIEW, Reason.NOT_CLASSIFIED}
    allowed = reasons_given(replace(EVERY_SIGNAL, author_allowed=True))
    assert untrusted - allowed == set(ALLOW_LISTED_SKIPS)
    assert allowed <= untrusted


def test_an_author_trusted_by_their_history_is_spared_exactly_trusted_skips() -> None:
    # Trust by history needs no earlier rejection: author_rejected_before is 0 on both sides.
    unknown = replace(EVERY_SIGNAL, author_rejected_before=0, author_approved_before=2)
    untrusted = reasons_given(unknown)
    trusted = reasons_given(replace(unknown, author_approved_before=3))  # PolicyLimits().approvals_before_trusted
    assert untrusted - trusted == set(TRUSTED_SKIPS)
    assert trusted <= untrusted


@pytest.mark.parametrize(
    "values",
    [
        {"spam_reject": 1.01},
        {"spam_hold": -0.01},
        {"advice_hold": 2.0},
        {"advice_hold": float("nan")},
        {"spam_reject": 0.4, "spam_hold": 0.5},
    ],
    ids=["reject-above-1", "hold-below-0", "advice-above-1", "nan", "hold-above-reject"],
)
def test_invalid_thresholds_are_refused(values: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Thresholds(**values)


def test_equal_hold_and_reject_thresholds_leave_no_hold_band() -> None:
    thresholds = Thresholds(spam_reject=0.7, spam_hold=0.7)
    assert decide(Scores(spam=0.69, medical_advice=0.0), thresholds).outcome == Outcome.APPROVE
    assert decide(Scores(spam=0.7, medical_advice=0.0), thresholds).outcome == Outcome.REJECT


def test_overridden_replaces_only_the_values_a_site_set() -> None:
    defaults = Thresholds(spam_reject=0.8, spam_hold=0.4, advice_hold=0.3)
    assert defaults.overridden(spam_reject=None, spam_hold=None, advice_hold=None) == defaults
    site = defaults.overridden(spam_reject=0.95, spam_hold=None, advice_hold=0.0)
    assert site == Thresholds(spam_reject=0.95, spam_hold=0.4, advice_hold=0.0)
    assert defaults == Thresholds(spam_reject=0.8, spam_hold=0.4, advice_hold=0.3)


def test_overridden_hold_above_the_models_reject_line_raises_that_line() -> None:
    # A site that only holds above 0.7 must not break on a model whose reject line is 0.6.
    defaults = Thresholds(spam_reject=0.6, spam_hold=0.3)
    assert defaults.overridden(spam_reject=None, spam_hold=0.7, advice_hold=None) == Thresholds(
        spam_reject=0.7, spam_hold=0.7, advice_hold=defaults.advice_hold
    )
    with pytest.raises(ValueError, match="advice_hold"):
        defaults.overridden(spam_reject=None, spam_hold=None, advice_hold=1.5)


# --- text in a script the models never learned ----------------------------------------------------

RUSSIAN_THANKS = "Спасибо за статью, массаж мне очень помог."
RUSSIAN_DOSING = "Принимайте ибупрофен по 800 мг три раза в день и бросьте таблетки от давления."


@pytest.mark.parametrize(
    ("scores", "signals"),
    [
        (Scores(spam=0.97, medical_advice=0.0), Signals.of_text(RUSSIAN_THANKS)),  # would be rejected as spam
        (Scores(spam=0.01, medical_advice=0.01), Signals.of_text(RUSSIAN_DOSING)),  # would be approved
        (Scores(spam=0.2, medical_advice=0.95), Signals.of_text("按摩对我的背痛很有帮助，谢谢这篇文章。")),
    ],
)
def test_text_in_an_unfamiliar_script_goes_to_a_person_whatever_its_scores(scores: Scores, signals: Signals) -> None:
    assert decide(scores, THRESHOLDS, signals) == Verdict(Outcome.HOLD, [Reason.UNFAMILIAR_LANGUAGE])


def test_an_allow_listed_author_writing_in_an_unfamiliar_script_is_still_read_by_a_person() -> None:
    signals = Signals(other_script=OtherScript.MOSTLY, author_allowed=True)
    assert decide(Scores(spam=0.0, medical_advice=0.0), THRESHOLDS, signals).outcome == Outcome.HOLD


def test_blocked_terms_and_other_signals_still_apply_to_an_unfamiliar_script() -> None:
    blocked = Signals(other_script=OtherScript.MOSTLY, blocked_terms=("casino",))
    assert decide(Scores(spam=0.0, medical_advice=0.0), THRESHOLDS, blocked) == Verdict(
        Outcome.REJECT, [Reason.BLOCKED_TERM, Reason.UNFAMILIAR_LANGUAGE]
    )
    links = Signals.of_text("Смотрите https://a.example и https://b.example — там всё написано про спину.")
    assert decide(Scores(spam=0.0, medical_advice=0.0), THRESHOLDS, links).reasons == [
        "unfamiliar_language",
        "many_links",
    ]


def test_a_passage_in_another_script_adds_a_hold_but_spam_around_it_is_still_rejected() -> None:
    """Twenty Chinese characters after pill spam must not turn its reject into a hold (a queue flood)."""
    spam = "Best pills cheap at www.pills.example order now " * 20 + "谢谢谢谢谢谢谢谢谢谢谢谢谢谢谢谢谢谢谢谢"
    assert decide(Scores(spam=0.99, medical_advice=0.0), THRESHOLDS, Signals.of_text(spam)) == Verdict(
        Outcome.REJECT, [Reason.SPAM, Reason.UNFAMILIAR_LANGUAGE, Reason.MANY_LINKS]
    )
    story = (
        "I had the same sciatica for months and the physio exercises in this article helped more than "
        "anything else, so thank you for writing it. Моя бабушка говорит то же самое."
    )
    assert decide(Scores(spam=0.0, medical_advice=0.7), THRESHOLDS, Signals.of_text(story)) == Verdict(
        Outcome.HOLD, [Reason.UNFAMILIAR_LANGUAGE, Reason.MEDICAL_ADVICE]
    )
