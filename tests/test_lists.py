"""Block and allow lists against comment text: what a blocked domain catches, with or without a link."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session, sessionmaker

from models.entities import Comment, ListEntry
from moderation.lists import ListError, add_entry, can_allow, match_lists


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


ALLOWED_REGULAR = [
    ListEntry(list_kind="allow", field="author", value="jane@physio.example"),
    ListEntry(list_kind="allow", field="domain", value="nhs.uk"),
]


@pytest.mark.parametrize(
    "copied",
    [
        {"author_name": "jane@physio.example"},  # her address typed as a name
        {"author_name": "Jane", "author_url": "https://www.nhs.uk/conditions/back-pain/"},
        {"author_url": "https://nhs.uk"},
        {"author_email": "jane@physio.example.evil"},
    ],
    ids=["address-as-name", "nhs-url", "bare-nhs-url", "longer-address"],
)
def test_what_anyone_can_type_never_allows(copied: dict[str, str]) -> None:
    """A name is public and a URL is typed by the commenter: copied, they would skip the spam reasons."""
    assert not match_lists(ALLOWED_REGULAR, Comment(body="Cheap pills at pharma.example", **copied)).author_allowed


@pytest.mark.parametrize("email", ["Jane@Physio.example", " jane@physio.example ", "gp@nhs.uk", "gp@leeds.nhs.uk"])
def test_the_authors_e_mail_address_or_its_domain_allows(email: str) -> None:
    assert match_lists(ALLOWED_REGULAR, Comment(body="Thanks!", author_email=email)).author_allowed


def test_an_author_is_allowed_by_e_mail_only_and_blocked_by_anything(sessions: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    with sessions.begin() as session:
        for not_an_address in ("Dr Jane Physio", "jane@", "@", "jane @physio.example"):
            with pytest.raises(ListError, match="an allowed author is named by e-mail address"):
                add_entry(session, "allow", "author", not_an_address, None, None, now)
        blocked = add_entry(session, "block", "author", "Dr Spam", None, None, now)
        allowed = add_entry(session, "allow", "author", "jane@physio.example", None, None, now)
        assert can_allow(blocked) and can_allow(allowed)
        from_before = ListEntry(list_kind="allow", field="author", value="dr jane physio")  # refused since
        assert not can_allow(from_before)
        assert not match_lists([from_before], Comment(body="Hi", author_name="Dr Jane Physio")).author_allowed
        # nor when a commenter types the entry's text as their address (intake takes any text there)
        assert not match_lists([from_before], Comment(body="Hi", author_email=" Dr Jane Physio ")).author_allowed
        assert match_lists([blocked], Comment(body="Hi", author_name="dr spam")).blocked_terms == ("author:dr spam",)


@pytest.mark.parametrize("mark", ["\u200b", "\u00ad", "\u2060", "\u200c", "\u034f", "\ufeff"])
def test_invisible_characters_do_not_hide_a_blocked_word_or_domain(mark: str) -> None:
    """A zero-width space or a soft hyphen inside a word is drawn as nothing: the lists read the text without it."""
    entries = [
        ListEntry(list_kind="block", field="word", value="oxycodone"),
        ListEntry(list_kind="block", field="domain", value="cheap-pills.example"),
    ]
    dressed = Comment(body=f"Buy oxy{mark}codone at cheap{mark}-pills.example today")
    assert match_lists(entries, dressed).blocked_terms == ("cheap-pills.example", "oxycodone")


def test_a_block_word_copied_from_a_dressed_comment_still_blocks_it(sessions: sessionmaker[Session]) -> None:
    """The dashboard shows the text as sent: a word copied from it carries its zero-width space, and such an
    entry, saved as typed, never matched once comments were read without them (a cold review)."""
    with sessions.begin() as session:
        saved = add_entry(session, "block", "word", "oxy\u200bcodone", None, None, datetime.now(UTC))
        assert saved.value == "oxycodone"
    kept_from_before = [ListEntry(list_kind="block", field="word", value="oxy\u200bcodone")]
    for body in ("Buy oxycodone today", "Buy oxy\u200bcodone today"):
        assert match_lists([saved], Comment(body=body)).blocked_terms == ("oxycodone",)
        assert match_lists(kept_from_before, Comment(body=body)).blocked_terms != ()


def test_invisible_characters_in_the_author_fields_do_not_hide_a_blocked_entry() -> None:
    entries = [
        ListEntry(list_kind="block", field="domain", value="cheap-pills.example"),
        ListEntry(list_kind="block", field="author", value="spam@bot.example"),
    ]
    by_url = Comment(body="Nice article.", author_url="https://cheap-pi\u00adlls.example/")
    by_email = Comment(body="Nice article.", author_email="spam@b\u200bot.example")
    assert match_lists(entries, by_url).blocked_terms == ("cheap-pills.example",)
    assert match_lists(entries, by_email).blocked_terms == ("author:spam@bot.example",)
