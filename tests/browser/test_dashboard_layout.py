"""The dashboard's layout in a real browser: nothing wider than a phone, the current comment never under the bar, a
long comment no taller than a bound in the queue."""

# mypy: disable-error-code="union-attr, arg-type"

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import Engine, select

from models.db import make_session_factory
from models.entities import CallbackDelivery, Comment, Decision, Site
from moderation.lists import add_entry
from tests.browser.helpers import seed_held, sign_in
from tests.browser.test_screenshots import seed
from tests.conftest import TrainedModel
from tests.support.dashboard import add_moderator, dead_callback, held_comment

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1400, "height": 900}
LONG_EMAIL = "a.very.long.address.without.any.place.to.break.it.0123456789@an-equally-long-domain-name.example.org"
LONG_URL = "https://backpain.example/" + "a-long-path-segment-without-spaces-" * 4 + "?utm_source=newsletter"
LONG_WORD = "A" * 300
LONG_COMMENT = ("My back hurt for years and nothing helped until I tried this, every single day. " * 250)[:20_000]


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def seed_long_text(engine: Engine, site_id: int) -> int:
    """What widened the pages: a long author e-mail and URL, a long callback URL, list value and error."""
    with make_session_factory(engine).begin() as session:
        site = session.get(Site, site_id)
        comment_id, decision_id = held_comment(
            session, site, "long", f"See {LONG_URL} and use {LONG_WORD}", author_email=LONG_EMAIL, author_url=LONG_URL
        )
        session.get(Comment, comment_id).article_url = LONG_URL
        # a word with no place to break, among the words that drove the score (it widened every page's queue)
        decision = session.get_one(Decision, decision_id)
        decision.explanation = {"spam": [], "medical_advice": [{"feature": LONG_WORD, "weight": 2.0}]}
        site.callback_url = LONG_URL
        add_moderator(session, LONG_EMAIL)
        add_entry(session, "block", "author", LONG_EMAIL, None, None, datetime.now(UTC))
        delivery = dead_callback(session, site_id, comment_id, decision_id)
        session.get(CallbackDelivery, delivery).last_error = "connection refused by " + LONG_URL
        return comment_id


def page_width(page: Page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


def test_no_page_is_wider_than_a_phone(
    phone: Page, web: str, accounts: dict[str, str], engine: Engine, active_model: TrainedModel
) -> None:
    site_id, _ids = seed(engine, active_model)
    long_id = seed_long_text(engine, site_id)
    with make_session_factory(engine)() as session:
        reviewed = session.scalar(
            select(Comment.id).join(Decision, Decision.comment_id == Comment.id).where(Decision.decided_by != "model")
        )
    sign_in(phone, web, accounts["admin"])
    paths = [
        "/dashboard/queue",
        f"/dashboard/comments/{long_id}",
        f"/dashboard/comments/{reviewed}",
        "/dashboard/overview",
        "/dashboard/admin/sites",
        f"/dashboard/admin/sites/{site_id}/thresholds",
        "/dashboard/admin/lists",
        "/dashboard/admin/moderators",
        "/dashboard/admin/callbacks",
        "/dashboard/admin/models",
    ]
    widths = {}
    for path in paths:
        phone.goto(f"{web}{path}")
        expect(phone.locator("main")).to_be_visible()
        widths[path] = page_width(phone)
    assert max(widths.values()) <= PHONE["width"] + 1, widths


def current_item_clear_of_the_bar(page: Page) -> dict[str, float]:
    where: dict[str, float] = page.evaluate(
        """() => {
            const item = document.querySelector('.item.current').getBoundingClientRect();
            const bar = document.getElementById('bulk-form').getBoundingClientRect();
            return {top: item.top, bottom: item.bottom, height: item.height, barBottom: bar.bottom,
                    window: window.innerHeight};
        }"""
    )
    return where


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_current_comment_is_never_under_the_bulk_bar(
    browser: Browser, web: str, accounts: dict[str, str], engine: Engine, site_id: int, viewport: dict[str, int]
) -> None:
    ids = seed_held(engine, site_id, 8, varied_lengths=True)
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    try:
        sign_in(page, web, accounts["moderator"])
        expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(ids[0]))
        positions = [current_item_clear_of_the_bar(page)]
        for n in range(1, 8):
            page.keyboard.press("j")
            expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(ids[n]))
            positions.append(current_item_clear_of_the_bar(page))
        for _ in range(7):
            page.keyboard.press("k")
            positions.append(current_item_clear_of_the_bar(page))
        for at in positions:
            assert at["top"] >= at["barBottom"], (at, positions)
            if at["height"] <= at["window"] - at["barBottom"]:
                assert at["bottom"] <= at["window"] + 1, (at, positions)
    finally:
        context.close()


def card_and_body(page: Page, comment_id: int) -> dict[str, float]:
    """The comment's card height, and its text's full and shown heights."""
    sizes: dict[str, float] = page.locator(f"#c{comment_id}").evaluate(
        """(card) => {
            const body = card.querySelector('.comment-body');
            return {card: card.getBoundingClientRect().height, text: body.scrollHeight, shown: body.clientHeight};
        }"""
    )
    return sizes


def test_a_long_comment_scrolls_within_its_card_in_the_queue_and_shows_whole_on_its_page(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """A 20,000-character comment would take several screens of the queue; its own page shows it all."""
    short_id = seed_held(engine, site_id, 1)[0]
    with make_session_factory(engine).begin() as session:
        long_id, _ = held_comment(session, session.get_one(Site, site_id), "long", LONG_COMMENT)
    sign_in(page, web, accounts["moderator"])
    expect(page.locator(f"#c{long_id}")).to_be_visible()

    short, long = card_and_body(page, short_id), card_and_body(page, long_id)
    assert long["text"] > 3 * page.evaluate("window.innerHeight")  # several screens of text...
    assert long["card"] <= short["card"] + 20 * 16 + 2  # ...shown in 20em (of the text's 16 px) at most
    assert long["shown"] < long["text"]  # the rest scrolled to, not cut away

    page.goto(f"{web}/dashboard/comments/{long_id}")
    whole = card_and_body(page, long_id)
    assert whole["shown"] == whole["text"] and whole["card"] > long["text"]
