"""How much a held-out measure can be trusted: the intervals `moderation evaluate` prints beside each target."""

from __future__ import annotations

import json
import math
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest

from models.entities import Outcome
from moderation.classifier import ModerationModel, Scores
from moderation.data import TEST, TRAIN, Example, load_own_corpus
from moderation.evaluation import (
    Scored,
    evaluation_scores,
    f1_interval,
    policy_metrics,
    policy_outcomes,
    rate_interval,
    trained_on,
    what_if,
)
from moderation.features import CommentText, OtherScript
from moderation.policy import Signals, Thresholds, decide
from moderation.report import (
    Coverage,
    EvaluationError,
    check_support,
    evaluate,
    label_rows,
    measure,
    policy_gaps,
    read_user_file,
    write_report,
)
from moderation.training import fit_examples


def wilson(count: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """The textbook formula, written out, to check the library call against."""
    p = count / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


@pytest.mark.parametrize(("count", "total"), [(26, 986), (0, 753), (53, 753), (3, 40)])
def test_rate_interval_is_the_wilson_interval(count: int, total: int) -> None:
    low, high = rate_interval(count, total)
    expected_low, expected_high = wilson(count, total)
    assert low == pytest.approx(max(0.0, expected_low), abs=1e-4)
    assert high == pytest.approx(expected_high, abs=1e-4)
    assert low <= count / total <= high


def test_a_rate_on_more_comments_has_a_narrower_interval() -> None:
    small, large = rate_interval(2, 100), rate_interval(20, 1000)
    assert small[1] - small[0] > 2 * (large[1] - large[0])


def test_f1_interval_holds_the_measured_f1_and_narrows_with_more_comments() -> None:
    few = {"tp": 38, "fp": 2, "fn": 2, "tn": 58}
    many = {key: value * 10 for key, value in few.items()}
    measured = 2 * 38 / (2 * 38 + 2 + 2)
    for confusion in (few, many):
        low, high = f1_interval(confusion)
        assert low < measured < high
    assert (f1_interval(few)[1] - f1_interval(few)[0]) > 2 * (f1_interval(many)[1] - f1_interval(many)[0])
    assert f1_interval(few) == f1_interval(few)  # seeded: the report does not change from run to run


def test_a_perfect_or_empty_confusion_gives_a_point() -> None:
    assert f1_interval({"tp": 10, "fp": 0, "fn": 0, "tn": 5}) == (1.0, 1.0)
    assert f1_interval({"tp": 0, "fp": 0, "fn": 0, "tn": 0}) == (0.0, 0.0)


def test_check_support_names_what_a_check_was_measured_on() -> None:
    rate = {"count": 26, "of": 986, "interval_95": rate_interval(26, 986)}
    assert check_support(rate) == "26 of 986, 0.0181-0.0384"
    f1 = {"of": 205, "interval_95": (0.9316, 0.9729)}
    assert check_support(f1) == "205 positives, 0.9316-0.9729"


# --- what `evaluate` measures on: never the model's own training rows -----------------------------------


@pytest.fixture(scope="module")
def corpus() -> list[Example]:
    return [e for e in load_own_corpus() if e.spam is not None and e.medical_advice is not None]


def training_rows(corpus: list[Example]) -> list[Example]:
    """A few hundred training rows from across the corpus files (each file holds one kind of comment)."""
    return [e for e in corpus if e.split == TRAIN][::12][:400]


@pytest.fixture(scope="module")
def small_model(corpus: list[Example]) -> ModerationModel:
    """A model fit in seconds on a few hundred training rows of the corpus (quality is beside the point)."""
    return fit_examples(training_rows(corpus))


def trained_and_new(corpus: list[Example], trained: int, new: int) -> tuple[list[Example], list[Example]]:
    held_out = [e for e in corpus if e.split == TEST][::5]
    return training_rows(corpus)[:trained], held_out[:new]


def test_a_fitted_model_keeps_the_fingerprints_of_its_training_rows(
    small_model: ModerationModel, corpus: list[Example]
) -> None:
    fingerprints = small_model.trained_fingerprints
    assert fingerprints is not None and fingerprints.dtype == np.uint64
    assert np.all(fingerprints[:-1] < fingerprints[1:])  # sorted and unique: a membership test is a search
    trained, new = trained_and_new(corpus, 5, 5)
    # the same text with other case and spacing is the same comment
    respelled = [replace(e, comment=replace(e.comment, body=f"  {e.comment.body.upper()}\n")) for e in trained]
    seen = trained_on(small_model, trained + respelled + new)
    assert seen is not None and seen.tolist() == [True] * 10 + [False] * 5


def test_evaluate_leaves_out_the_rows_the_model_was_trained_on(
    small_model: ModerationModel, corpus: list[Example], tmp_path: Path
) -> None:
    trained, new = trained_and_new(corpus, 12, 48)
    result = evaluate(small_model, trained + new)
    assert (result.coverage.given, result.coverage.trained_on, result.coverage.measured) == (60, 12, 48)
    assert len(result.scored) == 48 and {s.example for s in result.scored} == set(new)
    assert all(m["n"] == 48 for m in result.by_source["own"].values())
    assert "12 of 60 comments were in this model's training data and are left out" in result.coverage.summary()
    page = write_report(result, tmp_path).read_text()
    assert "12 of 60 comments were in this model's training data and are left out" in page
    assert json.loads((tmp_path / "metrics.json").read_text())["data"] == {"comments": 60, "trained_on_left_out": 12}


def test_evaluate_refuses_data_the_model_was_all_trained_on(
    small_model: ModerationModel, corpus: list[Example]
) -> None:
    trained, _ = trained_and_new(corpus, 30, 0)
    with pytest.raises(EvaluationError, match="all 30 labeled comments were in the training data"):
        evaluate(small_model, trained)


def test_a_model_saved_without_fingerprints_cannot_tell_what_it_was_trained_on(
    small_model: ModerationModel, corpus: list[Example], tmp_path: Path
) -> None:
    trained, new = trained_and_new(corpus, 12, 48)
    result = evaluate(replace(small_model, trained_fingerprints=None), trained + new)
    assert (result.coverage.trained_on, len(result.scored)) == (None, 60)
    assert "cannot tell which were trained on" in result.coverage.summary()
    assert "held-out" not in result.coverage.summary()
    page = write_report(result, tmp_path).read_text()
    assert "cannot tell which of these 60 comments were trained on" in page
    assert "held out: never trained on" not in page


@pytest.mark.parametrize("name", ["mine", "sms", "youtube", "reddit", "medquad", "own"])
def test_a_user_file_is_checked_against_the_in_domain_targets_whatever_its_name(
    small_model: ModerationModel, corpus: list[Example], tmp_path: Path, name: str
) -> None:
    _, new = trained_and_new(corpus, 0, 200)
    path = tmp_path / f"{name}.jsonl"
    rows = [{"body": e.comment.body, "spam": e.spam, "medical_advice": e.medical_advice} for e in new]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    examples = read_user_file(path)
    assert {e.source for e in examples} == {f"file:{name}"}  # the file name shows, but names no public set
    measures = [check["measure"] for check in evaluate(small_model, examples).checks]
    assert measures == ["spam F1", "medical_advice F1", "leak_rate", "ordinary_rejected", "ordinary_held"]


# --- the comments behind the numbers --------------------------------------------------------------------

HOSTILE_BODIES = ("<script>alert(1)</script> cheap pills", '"><img src=x onerror=alert(1)> great article')


def by_hand(
    body: str, spam: bool | None, advice: bool | None, scores: tuple[float, float], source: str = "own"
) -> Scored:
    return Scored(Example(CommentText(body=body), spam, advice, source, TEST), Scores(*scores))


def test_the_report_lists_the_worst_mistakes_per_label_escaped_and_cut(tmp_path: Path) -> None:
    scored = [by_hand(f"missed spam number {n}", True, False, (n / 100, 0.0)) for n in range(1, 26)]
    scored += [by_hand(HOSTILE_BODIES[0], True, False, (0.001, 0.0))]  # the worst miss of all
    scored += [by_hand(HOSTILE_BODIES[1], False, False, (0.97, 0.0))]  # a false alarm
    scored += [by_hand("caught spam", True, False, (0.99, 0.0)), by_hand("fine " * 200, False, False, (0.0, 0.0))]
    scored += [by_hand("long false alarm " + "x" * 1000, False, False, (0.95, 0.0))]
    result = measure("m", {}, scored, Coverage(len(scored), 0))
    spam = result.label_mistakes["spam"]
    assert [s.example.comment.body for s in spam.missed[:2]] == [HOSTILE_BODIES[0], "missed spam number 1"]
    assert spam.flagged[0].example.comment.body == HOSTILE_BODIES[1]
    assert len(spam.missed) == 26 and "caught spam" not in {s.example.comment.body for s in spam.missed}

    page = write_report(result, tmp_path).read_text()
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; cheap pills" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt; great article" in page
    assert "spam: missed (false negatives), 20 of 26" in page
    assert "missed spam number 19<" in page and "missed spam number 20<" not in page  # the 20 lowest scores
    assert "x" * 280 in page and "x" * 300 not in page  # cut to about 300 characters


def test_the_report_lists_leaked_and_wrongly_rejected_comments(tmp_path: Path) -> None:
    scored = [
        by_hand("Take 800mg ibuprofen every 6 hours", False, True, (0.01, 0.2)),  # approved: leaked advice
        by_hand(HOSTILE_BODIES[0], True, False, (0.3, 0.0)),  # approved: leaked spam
        by_hand(HOSTILE_BODIES[1], False, False, (0.95, 0.0)),  # ordinary, rejected as spam
        by_hand("Thanks for the article", False, False, (0.01, 0.01)),  # right
        by_hand("Buy pills at example.xyz", True, False, (0.99, 0.0)),  # right
    ]
    result = measure(
        "m", {"thresholds": {"spam_reject": 0.9, "spam_hold": 0.5, "advice_hold": 0.5}}, scored, Coverage(5, 0)
    )
    leaked = [s.example.comment.body for s in result.policy_mistakes.leaked]
    assert leaked == ["Take 800mg ibuprofen every 6 hours", HOSTILE_BODIES[0]]  # the least suspected first
    assert [s.example.comment.body for s in result.policy_mistakes.ordinary_rejected] == [HOSTILE_BODIES[1]]
    page = write_report(result, tmp_path).read_text()
    assert "Leaked: spam or medical advice approved (the least suspected first), 2 of 2" in page
    assert "Ordinary comments rejected (the highest spam score first), 1 of 1" in page
    assert "<script" not in page and "<img src=x" not in page and "Take 800mg ibuprofen every 6 hours" in page


# --- what cannot be measured says so --------------------------------------------------------------------


def test_rates_of_a_source_without_positives_are_a_dash_not_zero(tmp_path: Path) -> None:
    scored = [by_hand(f"text {n}", False, None, (n / 10, 0.0), source="file:clean") for n in range(10)]
    scored += [by_hand(f"spam {n}", n < 3, None, (0.9 if n < 2 else 0.1, 0.0), source="file:mixed") for n in range(6)]
    result = measure("m", {}, scored, Coverage(len(scored), 0))
    rows = {row[0]: row for row in label_rows(result)}
    assert rows["file:clean"][4:7] == [None, None, None]  # precision, recall, F1: no positive to find
    assert rows["file:mixed"][4:7] == [1.0, pytest.approx(0.6667), pytest.approx(0.8)]
    page = write_report(result, tmp_path).read_text()
    assert "<td>file:clean</td><td>spam</td><td>10</td><td>0</td><td>-</td><td>-</td><td>-</td>" in page


def test_an_empty_policy_table_says_why(tmp_path: Path) -> None:
    scored = [by_hand(f"spam {n}", n < 3, None, (n / 10, 0.0), source="file:spam_only") for n in range(6)]
    result = measure("m", {}, scored, Coverage(len(scored), 0))
    assert result.policy == {}
    gaps = policy_gaps(result)
    assert gaps is not None and gaps.startswith("No policy measures: no comment here carries both labels")
    assert "labeled for both spam and medical advice" in write_report(result, tmp_path).read_text()
    scored += [by_hand("both labels", False, False, (0.1, 0.1), source="own")]
    assert policy_gaps(measure("m", {}, scored, Coverage(len(scored), 0))) == (
        "Not in the policy table: file:spam_only: no comment there carries both labels, and the policy measures "
        "need comments labeled for both spam and medical advice (a comment is ordinary only when it is known to "
        "be neither, and leaked only when it is known to be one)."
    )


# --- the thresholds page's what-if decides the card's comments as evaluation decided them ---------------

# A plain comment, then one for each thing the text tells beyond the scores: at the default thresholds, each of
# these but the first is decided otherwise without its text signals.
REPLAYED = [
    by_hand("Thanks, the stretches really helped my back.", False, False, (0.1, 0.1)),
    by_hand("Try https://a.example/stretch and https://b.example/yoga as well", False, False, (0.1, 0.1)),  # links
    by_hand("Спасибо за статью, у меня тоже болит спина после работы", True, False, (0.95, 0.0)),  # another script
    by_hand("Thanks for the article, it helped my back. Спасибо большое, друзья мои!", False, False, (0.1, 0.1)),
]
RATES = ("leak_rate", "ordinary_held", "ordinary_rejected", "review_load")


def stored_card(scored: list[Scored]) -> dict[str, Any]:
    """A model card holding these comments' evaluation scores, through JSON as the registry stores it."""
    return {"evaluation_scores": json.loads(json.dumps(evaluation_scores(scored)))}


def replayed_outcome(one: Scored, thresholds: Thresholds) -> Outcome:
    """What the what-if decided for a card of this comment alone (its rates are each 0, 1 or None)."""
    rates = what_if(stored_card([one]), thresholds)
    if rates["review_load"] == 1.0:
        return Outcome.HOLD
    return Outcome.APPROVE if rates["leak_rate"] == 1.0 or rates["ordinary_rejected"] == 0.0 else Outcome.REJECT


@pytest.mark.parametrize(
    "thresholds", [Thresholds(), Thresholds(spam_reject=0.5, spam_hold=0.3, advice_hold=0.3)], ids=["default", "lower"]
)
def test_what_if_on_a_card_gives_the_outcomes_the_policy_gave_the_comments_bodies(thresholds: Thresholds) -> None:
    """The card keeps what ``Signals.of_text`` read from each held-out comment: a signal it did not carry would
    have the page decide those comments as if their text had said nothing."""
    outcomes = policy_outcomes(REPLAYED, thresholds)
    without_text = [decide(one.scores, thresholds).outcome for one in REPLAYED]
    assert [a != b for a, b in zip(outcomes, without_text, strict=True)] == [False, True, True, True]  # can fail

    assert [replayed_outcome(one, thresholds) for one in REPLAYED] == outcomes
    together = policy_metrics(REPLAYED, thresholds)
    assert what_if(stored_card(REPLAYED), thresholds) == {rate: together[rate] for rate in RATES}


def test_a_text_signal_of_text_gains_is_in_the_what_if_without_being_named_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stand-in for a signal added to ``Signals.of_text`` later: "again" read as a repeat posted elsewhere
    (which holds). Evaluation decides with it, so the page must too."""
    read_before = Signals.of_text

    def with_repeats(cls: type[Signals], body: str) -> Signals:
        return replace(read_before(body), duplicates_elsewhere=body.count("again"))

    monkeypatch.setattr(Signals, "of_text", classmethod(with_repeats))
    scored = [by_hand("Thanks again, it helped again", False, False, (0.1, 0.1)), *REPLAYED]
    assert policy_outcomes(scored, Thresholds())[0] == Outcome.HOLD  # the stand-in is read

    assert [replayed_outcome(one, Thresholds()) for one in scored] == policy_outcomes(scored, Thresholds())


def test_every_signal_goes_into_a_card_and_comes_back_and_older_cards_still_read() -> None:
    every = Signals(
        link_count=3,
        blocked_terms=("casino", "pills"),
        duplicates_elsewhere=1,
        author_posts_last_hour=12,
        author_approved_before=4,
        author_rejected_before=2,
        author_allowed=True,
        other_script=OtherScript.PASSAGE,
        hidden_characters=True,
    )
    assert all(getattr(every, one.name) != one.default for one in fields(Signals))  # a new signal: set it above
    columns = json.loads(json.dumps(Signals.to_card([every, Signals()])))
    assert Signals.from_card(columns, 2) == [every, Signals()]
    # Nothing to keep when no comment had a signal, but the links: versions before from_card need them.
    assert Signals.to_card([Signals(), Signals()]) == {"links": [0, 0]}
    # Written before ``other_script`` was kept, or when no comment had one: read as none.
    assert Signals.from_card({"links": [0, 2]}, 2) == [Signals(), Signals(link_count=2)]


# --- the report's plots ------------------------------------------------------------------------------


def scores_too_low(count: int = 400) -> list[Scored]:
    """Scores below the observed rates, as the shipped model's calibration curves show: above the diagonal."""
    rng = np.random.default_rng(0)
    rate = rng.uniform(0, 1, count)
    spam, advice = rng.uniform(0, 1, count) < rate, rng.uniform(0, 1, count) < rate
    return [
        Scored(Example(CommentText(body=f"comment {n}"), bool(s), bool(a), "own", TEST), Scores(r * r, r * r))
        for n, (r, s, a) in enumerate(zip(rate, spam, advice, strict=True))
    ]


def test_the_calibration_legend_is_below_the_diagonal_where_scores_too_low_draw_no_curve() -> None:
    from moderation.report import calibration_figure

    figure = calibration_figure(scores_too_low())
    figure.canvas.draw()
    for axis in figure.axes:
        curves = [line for line in axis.get_lines() if line.get_label() == "own"]
        assert curves
        points = np.asarray(curves[0].get_xydata())
        assert np.all(points[:, 1] >= points[:, 0])  # the curve is above the diagonal, as in the report
        legend = axis.get_legend()
        assert legend is not None
        box = legend.get_window_extent().transformed(axis.transData.inverted())
        assert all(y < x for x in (box.x0, box.x1) for y in (box.y0, box.y1)), box
    plt.close(figure)


def test_precision_recall_curves_are_drawn_as_steps() -> None:
    """Precision holds from one recall to the next; a line joining the points draws a saw-tooth."""
    from moderation.report import pr_curves_figure

    figure = pr_curves_figure(scores_too_low())
    lines = [line for axis in figure.axes for line in axis.get_lines()]
    assert len(lines) == 2 and {line.get_drawstyle() for line in lines} == {"steps-post"}
    plt.close(figure)


def test_the_report_writes_both_charts(tmp_path: Path) -> None:
    result = measure("v", {}, scores_too_low(), Coverage(given=400, trained_on=0))
    write_report(result, tmp_path)
    for name in ("pr_curves.png", "calibration.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
