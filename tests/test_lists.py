"""Block and allow lists against comment text: what a blocked domain catches, with or without a link."""

from __future__ import annotations

import pytest

from models.entities import Comment, ListEntry
from moderation.lists import match_lists


def blocked_domain(value: str) -> list[ListEntry]:
    return [ListEntry(list_kind="block", field="domain", value=value)]


@pytest.mark.parametrize(
    "body",
    [
        "Bei matratzen-blitzangebot.de gibt es gerade 60% Rabatt",  # a bare name the link finder leaves out
        "Order at https://shop.matratzen-blitzangebot.de/angebot now",
        "Bestellen: MATRATZEN-BLITZANGEBOT.DE.",
        "请访问matratzen-blitzangebot.de购买",  # no spaces around it
        "Schreib an info@matratzen-blitzangebot.de",
    ],
)
def test_a_blocked_domain_is_caught_however_the_comment_names_it(body: str) -> None:
    match = match_lists(blocked_domain("matratzen-blitzangebot.de"), Comment(body=body))
    assert match.blocked_terms == ("matratzen-blitzangebot.de",)


@pytest.mark.parametrize(
    "body",
    [
        "nicht-matratzen-blitzangebot.de ist eine andere Seite",
        "matratzen-blitzangebot.de.example.com is someone else's",
        "xmatratzen-blitzangebot.de",
        "matratzen-blitzangebot.de-x.com",
    ],
)
def test_a_blocked_domain_does_not_catch_other_names_that_contain_it(body: str) -> None:
    assert match_lists(blocked_domain("matratzen-blitzangebot.de"), Comment(body=body)).blocked_terms == ()


def test_an_allowed_domain_is_the_authors_own_never_one_mentioned() -> None:
    allowed = [ListEntry(list_kind="allow", field="domain", value="clinic.example")]
    assert not match_lists(allowed, Comment(body="I work at clinic.example")).author_allowed
    assert match_lists(allowed, Comment(body="Hi", author_email="nurse@clinic.example")).author_allowed
