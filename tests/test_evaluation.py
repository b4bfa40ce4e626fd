"""How much a held-out measure can be trusted: the intervals `moderation evaluate` prints beside each target."""

from __future__ import annotations

import math

import pytest

from moderation.evaluation import f1_interval, rate_interval
from moderation.report import check_support


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
