"""The dashboard in a real browser: sign-in, keyboard review, bulk actions, hostile text, CSRF, roles."""

# mypy: disable-error-code="union-attr, arg-type"

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from playwright.sync_api import Dialog, Page, Route, expect
from sqlalchemy import Engine, select

from models.db import make_session_factory
from models.entities import Comment, ModerationAction, Site, TrainingLabel
from tests.browser.helpers import ActionRequests, RoutedRequests, keys_ready, seed_held, sign_in
from tests.support.dashboard import held_comment

XSS = (
    "<script>window.__pwned = 1; document.title = 'pwned'</script>"
    '<img src=x onerror="window.__pwned = 2"><svg onload="window.__pwned = 3"></svg>'
    '<a href="javascript:window.__pwned=4">click me</a> "\'><iframe src="javascript:parent.__pwned=5"></iframe>'
)


def statuses(engine: Engine) -> dict[int, str]:
    with make_session_factory(engine)() as session:
        return {c.id: c.status for c in session.scalars(select(Comment))}


def audit(engine: Engine) -> list[tuple[int, str, str | None, str | None]]:
    with make_session_factory(engine)() as session:
        actions = session.scalars(select(ModerationAction).order_by(ModerationAction.id))
        return [(a.comment_id, a.action, a.reason, a.note) for a in actions]


def answer(asked: list[str], *, accept: bool) -> Callable[[Dialog], None]:
    """A dialog handler that notes the question and accepts or dismisses it."""

    def handle(dialog: Dialog) -> None:
        asked.append(dialog.message)
        if accept:
            dialog.accept()
        else:
            dialog.dismiss()

    return handle


def test_login_and_logout(page: Page, web: str, accounts: dict[str, str]) -> None:
    page.goto(f"{web}/dashboard/queue")
    expect(page).to_have_url(f"{web}/dashboard/login?next=%2Fdashboard%2Fqueue")
    page.fill('input[name="email"]', accounts["moderator"])
    page.fill('input[name="password"]', "not the password")
    page.click('button[type="submit"]')
    expect(page.locator(".flash.error")).to_contain_text("Wrong e-mail or password")
    sign_in(page, web, accounts["moderator"])
    expect(page.locator("header .who")).to_contain_text("mod@example.org")
    page.click("#logout")
    expect(page).to_have_url(f"{web}/dashboard/login")
    page.goto(f"{web}/dashboard/queue")
    expect(page).to_have_url(f"{web}/dashboard/login?next=%2Fdashboard%2Fqueue")


def test_keyboard_review_clears_the_held_queue(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    ids = seed_held(engine, site_id, 4)
    sign_in(page, web, accounts["moderator"])
    items = page.locator("#items .item")
    expect(items).to_have_count(4)
    expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(ids[0]))
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()

    page.keyboard.press("j")
    page.keyboard.press("k")
    page.keyboard.press("a")  # approve the first
    expect(items).to_have_count(3)
    expect(page.locator('[data-count="held"]')).to_have_text("3")
    expect(page.locator("#total")).to_have_text("3 comments")
    page.keyboard.press("r")
    page.keyboard.press("1")  # reject the next as spam: the note is focused, Enter submits
    page.keyboard.press("Enter")
    expect(items).to_have_count(2)
    page.keyboard.press("u")  # undo brings it back
    expect(items).to_have_count(3)
    keys_ready(page)  # the undo reloaded the queue
    page.keyboard.press("r")
    page.keyboard.press("2")  # medical advice
    page.keyboard.press("Enter")
    expect(items).to_have_count(2)
    page.keyboard.press("r")
    page.keyboard.press("5")  # other: the note is focused
    page.keyboard.type("dating site bait")
    page.keyboard.press("Enter")
    expect(items).to_have_count(1)
    expect(page.locator("#total")).to_have_text("1 comment")
    page.keyboard.press("a")
    expect(page.locator("#empty")).to_contain_text("The queue is clear")
    expect(page.locator("#total")).to_have_text("0 comments")  # not the count the page was loaded with

    assert statuses(engine) == {ids[0]: "approved", ids[1]: "rejected", ids[2]: "rejected", ids[3]: "approved"}
    with make_session_factory(engine)() as session:
        labels = {
            label.comment_id: (label.spam, label.medical_advice) for label in session.scalars(select(TrainingLabel))
        }
    assert labels == {ids[0]: (False, False), ids[1]: (None, True), ids[3]: (False, False)}
    page.goto(f"{web}/dashboard/comments/{ids[1]}")
    expect(page.locator(".audit-row")).to_have_count(3)  # reject, undo, reject


def test_a_comments_page_says_what_an_action_did_and_that_an_undo_is_final(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """The page reloads after each action; the tester saw only the badge change, and an Undo button that
    undid the undo (approving the comment again without a word)."""
    ids = seed_held(engine, site_id, 1)
    sign_in(page, web, accounts["moderator"])
    page.goto(f"{web}/dashboard/comments/{ids[0]}")
    toast = page.locator("#toast")
    page.keyboard.press("a")
    expect(toast).to_have_text(f"#{ids[0]} approved. Press u to undo.")  # the words the queue uses
    page.click(".undo-form button.undo")
    expect(toast).to_have_text(f"#{ids[0]} back to held.")
    expect(page.locator(".decided-by")).to_have_text("Put back by mod@example.org (undo)")
    expect(page.locator(".undo-form")).to_have_count(0)
    keys_ready(page)
    page.keyboard.press("u")
    expect(toast).to_have_text("Nothing to undo yet.")
    assert statuses(engine) == {ids[0]: "held"}
    assert [a[1] for a in audit(engine)] == ["approve", "undo"]


def test_bulk_reject(page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int) -> None:
    ids = seed_held(engine, site_id, 3)
    sign_in(page, web, accounts["moderator"])
    page.keyboard.press("x")
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("x")
    expect(page.locator("#selected-count")).to_have_text("2 selected")
    page.select_option("#bulk-reason", "medical_advice")
    page.keyboard.press("Escape")  # leave the select: its keys are its own
    asked: list[str] = []
    page.once("dialog", answer(asked, accept=False))
    page.keyboard.press("Shift+R")
    assert asked == ["Reject 2 selected comments as “Medical advice”? Their sites are told, and u does not undo this."]
    page.wait_for_timeout(500)  # a dismissed confirm must not have posted anything
    expect(page.locator("#items .item")).to_have_count(3)
    assert statuses(engine) == {ids[0]: "held", ids[1]: "held", ids[2]: "held"}

    page.once("dialog", answer(asked, accept=True))
    page.click('#bulk-form button[value="reject"]')
    expect(page.locator(".flash.info")).to_contain_text("reject: 2 comment(s) done.")
    expect(page.locator("#items .item")).to_have_count(1)
    assert len(asked) == 2
    assert statuses(engine) == {ids[0]: "rejected", ids[1]: "held", ids[2]: "rejected"}


def test_a_bulk_reject_as_other_without_a_note_asks_for_the_note_and_keeps_the_selection(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """It asked first, then failed once per comment on the server and the reload lost the selection."""
    ids = seed_held(engine, site_id, 2)
    sign_in(page, web, accounts["moderator"])
    page.keyboard.press("x")
    expect(page.locator("#selected-count")).to_have_text("1 selected")
    page.select_option("#bulk-reason", "other")
    asked: list[str] = []
    page.on("dialog", answer(asked, accept=True))
    page.click('#bulk-form button[value="reject"]')
    expect(page.locator("#toast")).to_have_text("Say why in the note when the reason is “Other”.")
    expect(page.locator("#bulk-note")).to_be_focused()
    assert asked == []
    expect(page.locator("#selected-count")).to_have_text("1 selected")
    page.fill("#bulk-note", "a sales pitch in disguise")
    page.click('#bulk-form button[value="reject"]')
    expect(page.locator(".flash.info")).to_contain_text("reject: 1 comment(s) done.")
    assert statuses(engine) == {ids[0]: "rejected", ids[1]: "held"}


def test_a_note_typed_after_a_reject_key_stays_in_the_note(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """The tester's sequence: r, a reason, a note with shortcut letters in it (a approves, o opens), Enter."""
    ids = seed_held(engine, site_id, 3)
    sign_in(page, web, accounts["moderator"])
    note = page.locator(f"#c{ids[0]} .note")
    page.keyboard.press("r")
    page.keyboard.press("2")
    expect(note).to_be_focused()
    page.keyboard.type("personal dosing advice")
    expect(note).to_have_value("personal dosing advice")
    assert statuses(engine) == dict.fromkeys(ids, "held")  # nothing is sent before Enter
    page.keyboard.press("Enter")
    expect(page.locator("#items .item")).to_have_count(2)
    expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(ids[1]))
    expect(page).to_have_url(f"{web}/dashboard/queue")
    assert statuses(engine) == {ids[0]: "rejected", ids[1]: "held", ids[2]: "held"}
    assert audit(engine) == [(ids[0], "reject", "medical_advice", "personal dosing advice")]


def test_a_keyboard_reject_as_other_without_a_note_asks_for_the_note_before_sending(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """As the bulk reject does: `r`, `5`, Enter used to go to the server and come back refused."""
    ids = seed_held(engine, site_id, 2)
    sign_in(page, web, accounts["moderator"])
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    note = page.locator(f"#c{ids[0]} .note")
    page.keyboard.press("r")
    page.keyboard.press("5")
    expect(note).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#toast")).to_have_text("Say why in the note when the reason is “Other”.")
    expect(note).to_be_focused()
    page.keyboard.type("a pitch for a clinic")
    page.keyboard.press("Enter")
    expect(page.locator("#items .item")).to_have_count(1)
    assert len(posts) == 1
    assert statuses(engine) == {ids[0]: "rejected", ids[1]: "held"}
    assert audit(engine) == [(ids[0], "reject", "other", "a pitch for a clinic")]


def test_the_tabs_count_what_the_filters_match_after_an_action(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """Under a reason filter the approved tab went up by one, though a moderator's approval has no model reason."""
    seed_held(engine, site_id, 3)
    sign_in(page, web, accounts["moderator"])
    page.goto(f"{web}/dashboard/queue?queue=held&reason=medical_advice")
    keys_ready(page)
    expect(page.locator('[data-count="held"]')).to_have_text("3")
    page.keyboard.press("a")
    expect(page.locator("#items .item")).to_have_count(2)
    expect(page.locator('[data-count="held"]')).to_have_text("2")
    expect(page.locator('[data-count="approved"]')).to_have_text("0")
    expect(page.locator('[data-count="all"]')).to_have_text("2")
    # The "all" tab keeps an approved comment in place, but not under a filter it no longer matches.
    page.goto(f"{web}/dashboard/queue?queue=all&reason=medical_advice")
    keys_ready(page)
    page.keyboard.press("a")
    expect(page.locator("#items .item")).to_have_count(1)
    expect(page.locator("#total")).to_have_text("1 comment")
    expect(page.locator('[data-count="all"]')).to_have_text("1")
    # Without filters "all" keeps it, shown anew: its tabs counted, its buttons and its decision id as they are now.
    page.goto(f"{web}/dashboard/queue?queue=all")
    keys_ready(page)
    expect(page.locator('[data-count="held"]')).to_have_text("1")
    page.locator("#items .item .badge.held").click()  # the one left held is made current
    current = page.locator(".item.current").get_attribute("data-comment-id")
    page.keyboard.press("a")
    expect(page.locator("#toast")).to_contain_text(f"#{current} approved")
    expect(page.locator('[data-count="held"]')).to_have_text("0")
    expect(page.locator('[data-count="approved"]')).to_have_text("3")
    expect(page.locator(f"#c{current} .badge")).to_have_text("approved")
    expect(page.locator(f"#c{current} .approve-form button")).to_be_disabled()
    expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(current))


def test_no_shortcut_acts_while_a_reject_is_composed_or_the_help_is_open(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    ids = seed_held(engine, site_id, 3)
    sign_in(page, web, accounts["moderator"])
    first = page.locator(f"#c{ids[0]}")
    page.keyboard.press("r")
    for key in ("a", "j", "x", "u", "o", "Enter"):  # waiting for a reason: none of these may act
        page.keyboard.press(key)
    expect(first.locator(".reject-reasons")).to_have_class(re.compile(r"\bopen\b"))
    page.keyboard.press("Escape")
    expect(first.locator(".reject-reasons")).not_to_have_class(re.compile(r"\bopen\b"))

    page.keyboard.press("r")
    page.keyboard.press("1")
    page.keyboard.press("a")  # the tester's reproduction: this approved the next comment
    expect(first.locator(".note")).to_have_value("a")
    page.keyboard.press("Escape")  # cancels the reject: its reason and note are cleared
    expect(first.locator(".note")).to_have_value("")
    expect(first.locator('input[name="reason"]:checked')).to_have_count(0)

    page.keyboard.press("?")
    page.keyboard.press("a")  # the help covers the queue: nothing acts behind it
    page.keyboard.press("Escape")
    page.wait_for_timeout(500)  # time for a wrongly sent action to land
    expect(page).to_have_url(f"{web}/dashboard/queue")
    expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(ids[0]))
    expect(first.locator(".select")).not_to_be_checked()
    assert statuses(engine) == dict.fromkeys(ids, "held")
    assert audit(engine) == []

    page.keyboard.press("a")  # the keys work again, on the comment shown as current
    expect(page.locator("#items .item")).to_have_count(2)
    assert statuses(engine) == {ids[0]: "approved", ids[1]: "held", ids[2]: "held"}


def test_typing_in_a_note_clicked_with_the_mouse_stays_in_the_note(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    ids = seed_held(engine, site_id, 2)
    sign_in(page, web, accounts["moderator"])
    second = page.locator(f"#c{ids[1]}")
    second.locator('input[name="reason"][value="other"]').check()
    second.locator(".note").click()
    page.keyboard.press("Enter")  # refused: "other" needs a note; the focus stays in the note
    expect(page.locator("#toast")).to_have_text("Say why in the note when the reason is “Other”.")
    expect(second.locator(".note")).to_be_focused()
    page.keyboard.type("dating site bait")
    expect(second.locator(".note")).to_have_value("dating site bait")
    assert statuses(engine) == dict.fromkeys(ids, "held")
    page.keyboard.press("Enter")
    expect(page.locator("#items .item")).to_have_count(1)
    assert statuses(engine) == {ids[0]: "held", ids[1]: "rejected"}
    assert audit(engine) == [(ids[1], "reject", "other", "dating site bait")]


def wait_for_request(page: Page, held: list[Route], failure: str, seconds: float = 15) -> None:
    """Until a request held by ``page.route`` arrives; a key press that was lost fails here, not at the
    300 s timeout of the whole test."""
    deadline = time.monotonic() + seconds
    while not held:
        if time.monotonic() >= deadline:  # what the page said, and where it was, tell a lost key from a refused one
            toast = page.locator("#toast").text_content() or ""
            current = page.locator(".item.current").get_attribute("data-comment-id")
            raise AssertionError(f"{failure} (toast: {toast.strip()!r}; current: #{current})")
        page.wait_for_timeout(50)


def test_keys_pressed_while_an_action_is_saved_stay_on_the_comment_in_view(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    ids = seed_held(engine, site_id, 5)
    actions = ActionRequests(page)
    waiting = actions.held
    sign_in(page, web, accounts["moderator"])
    items = page.locator("#items .item")
    expect(items.first).to_be_focused()  # dashboard.js has run: a key pressed before is lost
    page.keyboard.press("a")
    expect(items).to_have_count(4)
    expect(items.first).to_be_focused()  # the next comment took the focus: a key pressed before is lost
    actions.hold()  # the server's answer waits, to see what keys do meanwhile
    page.keyboard.press("a")  # approves the second comment
    wait_for_request(page, waiting, "pressing a sent no approve")
    page.keyboard.press("a")  # a second approve while the first is saved is dropped, not sent
    page.keyboard.press("u")  # so is undo: it would undo the first comment, not the one being saved
    page.keyboard.press("j")  # the moderator moves on to the third comment
    page.wait_for_timeout(300)
    assert len(waiting) == 1
    waiting.pop().continue_()
    expect(items).to_have_count(3)
    expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(ids[2]))

    page.keyboard.press("r")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    wait_for_request(page, waiting, "Enter in the reject's note sent no reject")
    page.keyboard.press("Enter")  # a second Enter in the note while the reject is saved sends nothing more
    page.wait_for_timeout(300)
    assert len(waiting) == 1
    actions.send_on()
    waiting.pop().continue_()
    expect(items).to_have_count(2)
    expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(ids[3]))

    page.keyboard.down("a")  # a held-down key approves once, its repeats do nothing
    expect(items).to_have_count(1)
    page.keyboard.down("a")
    page.keyboard.up("a")
    page.wait_for_timeout(500)
    expect(items).to_have_count(1)
    assert statuses(engine) == {
        ids[0]: "approved",
        ids[1]: "approved",
        ids[2]: "rejected",
        ids[3]: "approved",
        ids[4]: "held",
    }
    assert len(audit(engine)) == 4


def test_bulk_approve_asks_first(page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int) -> None:
    ids = seed_held(engine, site_id, 2)
    sign_in(page, web, accounts["moderator"])
    page.click("#select-all")
    asked: list[str] = []
    page.once("dialog", answer(asked, accept=False))
    page.keyboard.press("Shift+A")
    assert asked == ["Approve 2 selected comments? They are published, their sites are told, and u does not undo this."]
    page.wait_for_timeout(500)
    assert statuses(engine) == dict.fromkeys(ids, "held")
    page.once("dialog", answer(asked, accept=True))
    page.keyboard.press("Shift+A")
    expect(page.locator(".flash.info")).to_contain_text("approve: 2 comment(s) done.")
    assert statuses(engine) == dict.fromkeys(ids, "approved")


def test_script_payloads_are_shown_as_text(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    with make_session_factory(engine).begin() as session:
        comment_id, _ = held_comment(
            session, session.get(Site, site_id), "xss", XSS, author_name=XSS[:150], author_url="javascript:alert(1)"
        )
    dialogs: list[str] = []

    def refuse(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", refuse)
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    sign_in(page, web, accounts["moderator"])
    for path in ("/dashboard/queue", f"/dashboard/comments/{comment_id}"):
        page.goto(f"{web}{path}")
        expect(page.locator(".comment-body").first).to_contain_text("<script>window.__pwned = 1;")
        expect(page.locator(".comment-body").first).to_contain_text('<img src=x onerror="window.__pwned = 2">')
        assert page.evaluate("window.__pwned") is None
        assert page.title() != "pwned"
        assert (
            page.locator(".comment-body img, .comment-body script, .comment-body svg, .comment-body iframe").count()
            == 0
        )
        assert page.locator('a[href^="javascript:"]').count() == 0
    assert dialogs == []


RLO = "\u202e"  # right-to-left override: reverses the order of what follows it, to the end of its paragraph


def _left_of(page: Page, selector: str, text: str) -> float:
    """Where the first ``text`` inside the element starts on screen (the left edge of its glyphs)."""
    left: float = page.locator(selector).first.evaluate(
        """(element, text) => {
            const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                const at = node.data.indexOf(text);
                if (at >= 0) {
                    const range = document.createRange();
                    range.setStart(node, at);
                    range.setEnd(node, at + text.length);
                    return range.getBoundingClientRect().left;
                }
            }
            throw new Error("not found: " + text);
        }""",
        text,
    )
    return left


def test_bidi_controls_in_a_sites_text_cannot_reorder_the_page_around_it(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """A comment id and an article title holding U+202E: the heading's closing bracket stays after the id, and
    the card's date after the article, where the page put them (escaping alone does not stop this)."""
    with make_session_factory(engine).begin() as session:
        comment_id, _ = held_comment(
            session, session.get(Site, site_id), f"rtl{RLO}abc", article_title=f"Sciatica{RLO} and you"
        )
    sign_in(page, web, accounts["moderator"])
    page.goto(f"{web}/dashboard/comments/{comment_id}")
    assert _left_of(page, "h1 small", ")") > _left_of(page, "h1 small", "abc")  # the override reverses "abc)"
    page.goto(f"{web}/dashboard/queue")
    card = f"#c{comment_id} .item-head"
    assert _left_of(page, card, "UTC") > _left_of(page, card, "and you")


def test_form_post_without_csrf_token_is_refused(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    ids = seed_held(engine, site_id, 1)
    sign_in(page, web, accounts["moderator"])
    page.evaluate(
        """id => {
            const form = document.createElement('form');
            form.method = 'post';
            form.action = `/dashboard/comments/${id}/act`;
            for (const [name, value] of [['action', 'approve'], ['expected_decision_id', '']]) {
                const input = document.createElement('input');
                input.name = name; input.value = value; form.append(input);
            }
            document.body.append(form);
            form.submit();
        }""",
        ids[0],
    )
    expect(page.locator(".error-page")).to_contain_text("The CSRF token is missing")
    assert statuses(engine) == {ids[0]: "held"}


def test_moderator_is_refused_admin_pages(page: Page, web: str, accounts: dict[str, str], site_id: int) -> None:
    sign_in(page, web, accounts["moderator"])
    expect(page.locator("header nav")).not_to_contain_text("Sites")
    for path in (
        "/dashboard/admin/sites",
        "/dashboard/admin/moderators",
        f"/dashboard/admin/sites/{site_id}/thresholds",
    ):
        response = page.goto(f"{web}{path}")
        assert response is not None and response.status == 403
        expect(page.locator(".error-page")).to_contain_text("Only admins")


def test_admin_previews_a_threshold_before_saving(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    sign_in(page, web, accounts["admin"])
    page.goto(f"{web}/dashboard/admin/sites/{site_id}/thresholds")
    page.locator('#threshold-form input[name="advice_hold"]').fill("0.35")
    expect(page.locator("#advice_hold-out")).to_have_text("0.35")
    expect(page.locator("#save-thresholds")).to_be_enabled()
    expect(page.locator('#save-form input[name="advice_hold"]')).to_have_value("0.35")
    page.click("#save-thresholds")
    expect(page.locator(".flash.info")).to_contain_text("Thresholds of backpain-advisor saved")
    with make_session_factory(engine)() as session:
        assert session.get(Site, site_id).advice_hold_threshold == 0.35


def test_thresholds_that_cannot_be_saved_say_why_where_the_admin_looks(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """The reason was a tooltip in the code's words, and the table went on showing the last valid figures."""
    sign_in(page, web, accounts["admin"])
    page.goto(f"{web}/dashboard/admin/sites/{site_id}/thresholds")
    page.locator('#threshold-form input[name="spam_reject"]').fill("0")
    problem = page.locator("#threshold-problem")
    expect(problem).to_have_text("Cannot save: “Hold as possible spam” must not be above “Reject as spam”.")
    expect(page.locator("#save-thresholds")).to_be_disabled()
    expect(page.locator('[data-saved-source="spam_reject"]')).to_have_text("–")
    page.locator('#threshold-form input[name="spam_reject"]').fill("0.87")
    expect(problem).to_be_hidden()
    expect(page.locator("#save-thresholds")).to_be_enabled()
    expect(page.locator('[data-saved-source="spam_reject"]')).to_have_text("0.87, the site's own")


def test_refused_values_stay_in_the_sliders_until_the_admin_corrects_them(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """Refused, the page put the saved values back in the sliders, and its own preview of those then offered to
    save them: the admin lost what they had tried, and Save was ready for values they had not chosen."""
    dialogs: list[str] = []
    page.on("dialog", answer(dialogs, accept=False))
    sign_in(page, web, accounts["admin"])
    # What the "Preview the effect" form sends without the page's script: a hold above the reject line.
    opened = page.goto(
        f"{web}/dashboard/admin/sites/{site_id}/thresholds?spam_reject=0.50&spam_hold=0.60&advice_hold=0.20"
    )
    assert opened is not None and opened.status == 422  # the page shows all the same
    for name, value in (("spam_reject", "0.5"), ("spam_hold", "0.6"), ("advice_hold", "0.2")):
        expect(page.locator(f'#threshold-form input[name="{name}"]')).to_have_value(value)
        expect(page.locator(f"#{name}-out")).to_have_text(f"{float(value):.2f}")
    expect(page.locator("#save-thresholds")).to_be_disabled()
    refused = page.locator("#threshold-refused")
    expect(refused).to_have_text("“Hold as possible spam” must not be above “Reject as spam”")
    page.locator('#threshold-form input[name="spam_reject"]').fill("0.87")
    expect(refused).to_be_hidden()
    expect(page.locator("#save-thresholds")).to_be_enabled()
    expect(page.locator('[data-saved-source="spam_hold"]')).to_have_text("0.60, the site's own")

    # A save the server refuses (a form edited by hand here) comes back with what it sent, as text.
    hostile = '<img src=x onerror="alert(1)">'
    page.locator('#save-form input[name="spam_hold"]').evaluate("(input, value) => { input.value = value; }", hostile)
    with page.expect_response(lambda response: response.request.method == "POST") as saved:
        page.click("#save-thresholds")
    assert saved.value.status == 422
    said = f"Not saved: “Hold as possible spam” must be a number between 0 and 1, got {hostile}"
    expect(refused).to_contain_text(said)
    expect(page.locator("#spam_hold-out")).to_have_text(hostile)
    expect(page.locator('#threshold-form input[name="spam_reject"]')).to_have_value("0.87")
    expect(page.locator("#save-thresholds")).to_be_disabled()
    # Moving another slider previews the value sent, not the middle the slider shows for it.
    page.locator('#threshold-form input[name="advice_hold"]').fill("0.3")
    expect(page.locator("#threshold-problem")).to_contain_text(f"got {hostile}")
    expect(page.locator("#save-thresholds")).to_be_disabled()
    assert dialogs == []
    with make_session_factory(engine)() as session:
        site = session.get(Site, site_id)
        stored = (site.spam_reject_threshold, site.spam_hold_threshold, site.advice_hold_threshold)
    assert stored == (None, None, None)


def test_unticking_use_the_models_makes_todays_value_the_sites_own(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    sign_in(page, web, accounts["admin"])
    page.goto(f"{web}/dashboard/admin/sites/{site_id}/thresholds")
    box = page.locator('#save-form input[name="follow_spam_hold"]')
    expect(box).to_be_checked()
    model_value = float(box.get_attribute("data-model") or "nan")
    box.uncheck()
    expect(page.locator('[data-saved-source="spam_hold"]')).to_contain_text("the site's own")
    expect(box).not_to_be_checked()  # the preview's answer keeps it unticked
    expect(page.locator("#save-thresholds")).to_be_enabled()
    page.click("#save-thresholds")
    expect(page.locator(".flash.info")).to_contain_text("saved")
    with make_session_factory(engine)() as session:
        site = session.get(Site, site_id)
        assert site is not None and site.spam_hold_threshold == model_value
        assert site.advice_hold_threshold is None  # untouched: still the model's


def test_a_sites_own_reject_line_raised_to_the_hold_is_said_raised_after_a_preview(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """The site's own reject line below the model's hold line is raised to it (Thresholds.overridden): the page
    and its script's preview said "<hold>, the site's own", which is not the site's value (a cold review's)."""
    sign_in(page, web, accounts["admin"])
    thresholds = f"{web}/dashboard/admin/sites/{site_id}/thresholds"
    page.goto(thresholds)
    hold = float(page.locator('#save-form input[name="follow_spam_hold"]').get_attribute("data-model") or "nan")
    assert hold >= 0.1, hold
    own = round(hold - 0.1, 2)
    with make_session_factory(engine).begin() as session:
        session.get(Site, site_id).spam_reject_threshold = own
    page.goto(thresholds)
    raised = f"{hold:.2f}, the site's own {own:.2f}, raised to the hold"
    expect(page.locator('[data-now-source="spam_reject"]')).to_have_text(raised)
    page.locator('#threshold-form input[name="advice_hold"]').fill("0.35")
    # Written by the script from the preview's answer, in one go with the spam reject line's cell:
    expect(page.locator('[data-saved-source="advice_hold"]')).to_have_text("0.35, the site's own")
    expect(page.locator('[data-saved-source="spam_reject"]')).to_have_text(raised)
    expect(page.locator('#save-form input[name="follow_spam_reject"]')).not_to_be_checked()


# The thresholds page's preview requests (not the page itself, nor its save).
PREVIEWS = re.compile(r"/thresholds/preview(\?|$)")
# Any fixed start: the page's clock is the test's from here, so that a jump forward never lands in its past.
CLOCK_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def wait_for_preview(page: Page, held: list[Route], failure: str, seconds: float = 15) -> None:
    """Until a preview held by ``RoutedRequests`` arrives; one never sent fails here, saying what the page showed,
    not at the 300 s timeout of the whole test."""
    deadline = time.monotonic() + seconds
    while not held:
        if time.monotonic() >= deadline:
            problem = page.locator("#threshold-problem").text_content() or ""
            raise AssertionError(f"{failure} (the page said: {problem.strip()!r})")
        page.wait_for_timeout(50)


def answer_held_preview(page: Page, held: list[Route]) -> None:
    """Sends the oldest held preview on and waits until its answer has reached the page."""
    with page.expect_response(PREVIEWS) as answered:
        held.pop(0).continue_()
    answered.value.finished()


def test_a_preview_answered_after_a_slider_moved_is_not_applied(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """The page's own first preview, still on its way when the admin moved a slider, was applied when answered:
    it ticked "use the model's" again for that slider (it was ticked when sent), and the next preview sent the box
    and put the model's value back, in what Save would store too. A full run's browser test saw it."""
    previews = RoutedRequests(page, PREVIEWS)
    previews.hold()
    sign_in(page, web, accounts["admin"])
    page.clock.install(time=CLOCK_START)
    page.goto(f"{web}/dashboard/admin/sites/{site_id}/thresholds")
    wait_for_preview(page, previews.held, "the thresholds page sent no preview of its own")
    # The answer must be handled before the next preview leaves, 150 ms after the slider moves (a loaded machine's
    # order): with the page's time stopped that preview waits for the test, not for the machine.
    page.clock.pause_at(CLOCK_START + timedelta(hours=1))
    follow = page.locator('#save-form input[name="follow_spam_hold"]')
    expect(follow).to_be_checked()  # the site follows the model's: the held preview sent no value of its own
    slider = page.locator('#threshold-form input[name="spam_hold"]')
    slider.fill("0.4")
    expect(follow).not_to_be_checked()

    answer_held_preview(page, previews.held)
    page.wait_for_timeout(300)  # no timer runs meanwhile: a stale answer applied would show by now, and stay
    assert not follow.is_checked(), "the preview sent before the slider moved ticked its “use the model's” again"
    expect(slider).to_have_value("0.4")

    previews.send_on()
    page.clock.resume()  # the slider's own preview leaves now
    expect(page.locator('[data-saved-source="spam_hold"]')).to_have_text("0.40, the site's own")
    expect(follow).not_to_be_checked()
    expect(slider).to_have_value("0.4")
    expect(page.locator("#spam_hold-out")).to_have_text("0.40")
    expect(page.locator('#save-form input[name="spam_hold"]')).to_have_value("0.40")
    expect(page.locator("#save-thresholds")).to_be_enabled()
    page.click("#save-thresholds")
    expect(page.locator(".flash.info")).to_contain_text("saved")
    with make_session_factory(engine)() as session:
        assert session.get(Site, site_id).spam_hold_threshold == 0.4


def test_enter_in_the_bulk_note_rejects_the_selection(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    ids = seed_held(engine, site_id, 2)
    sign_in(page, web, accounts["moderator"])
    page.click("#select-all")
    page.fill("#bulk-note", "dosing advice")
    asked: list[str] = []
    page.once("dialog", answer(asked, accept=True))
    page.press("#bulk-note", "Enter")  # the form's first button is Approve: Enter here must not be it
    expect(page.locator(".flash.info")).to_contain_text("reject: 2 comment(s) done.")
    assert asked and asked[0].startswith("Reject 2 selected comments")
    assert statuses(engine) == dict.fromkeys(ids, "rejected")


def test_a_field_typed_in_while_an_action_is_saved_keeps_the_focus(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    ids = seed_held(engine, site_id, 3)
    actions = ActionRequests(page)
    actions.hold()
    waiting = actions.held
    sign_in(page, web, accounts["moderator"])
    # The first comment is current and has the focus once dashboard.js has run: a key before that is lost
    # (seen once on a loaded machine: the loop below then waited for a request that never came).
    expect(page.locator("#items .item").first).to_be_focused()
    expect(page.locator("#items .item.current .item-head")).to_be_in_viewport()  # else `a` only shows it
    page.keyboard.press("a")
    wait_for_request(page, waiting, "pressing a sent no approve")
    page.keyboard.press("/")  # on to the search field while the approve is saved
    page.keyboard.type("sp")
    actions.send_on()
    waiting.pop().continue_()
    expect(page.locator("#items .item")).to_have_count(2)
    expect(page.locator("#search-text")).to_be_focused()
    page.keyboard.type("am")  # had the saved action taken the focus, `a` would approve the next comment
    expect(page.locator("#search-text")).to_have_value("spam")
    page.wait_for_timeout(300)
    assert statuses(engine) == {ids[0]: "approved", ids[1]: "held", ids[2]: "held"}
