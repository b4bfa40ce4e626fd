"""Keys across reloads and their limits: undo kept for the tab, a session that ended, a deleted comment."""

# mypy: disable-error-code="union-attr, arg-type"

from __future__ import annotations

import re

from playwright.sync_api import Page, Route, expect
from sqlalchemy import Engine

from models.db import make_session_factory
from models.entities import Comment
from tests.browser.helpers import ActionRequests, keys_ready, seed_held, sign_in
from tests.browser.test_dashboard_browser import audit, statuses


def test_u_undoes_an_action_on_a_comments_own_page(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    ids = seed_held(engine, site_id, 2)
    sign_in(page, web, accounts["moderator"])
    page.goto(f"{web}/dashboard/comments/{ids[0]}")
    page.keyboard.press("a")  # the page reloads once the approve is saved
    expect(page.locator(".audit-row")).to_have_count(1)
    assert statuses(engine)[ids[0]] == "approved"
    page.goto(f"{web}/dashboard/comments/{ids[1]}")
    page.keyboard.press("u")  # on another comment's page, u does not reach back to the first one
    expect(page.locator("#toast")).to_contain_text(f"Your last action was on #{ids[0]}")
    page.goto(f"{web}/dashboard/comments/{ids[0]}")
    page.keyboard.press("u")
    expect(page.locator(".audit-row")).to_have_count(2)
    keys_ready(page)  # the undo reloaded the page
    assert statuses(engine) == dict.fromkeys(ids, "held")
    page.keyboard.press("u")  # the undo is not itself undone by u
    expect(page.locator("#toast")).to_contain_text("Nothing to undo yet.")
    assert [a[1] for a in audit(engine)] == ["approve", "undo"]


def test_u_still_undoes_after_the_queue_reloads(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    ids = seed_held(engine, site_id, 3)
    sign_in(page, web, accounts["moderator"])
    page.keyboard.press("a")
    expect(page.locator("#items .item")).to_have_count(2)
    page.reload()
    expect(page.locator("#items .item")).to_have_count(2)
    page.keyboard.press("u")
    expect(page.locator("#items .item")).to_have_count(3)
    assert statuses(engine) == dict.fromkeys(ids, "held")
    assert [(a[0], a[1]) for a in audit(engine)] == [(ids[0], "approve"), (ids[0], "undo")]


def test_after_the_undo_reloads_the_queue_the_toast_says_what_it_did(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    ids = seed_held(engine, site_id, 2)
    sign_in(page, web, accounts["moderator"])
    expect(page.locator("#items .item").first).to_be_focused()  # dashboard.js runs: a key before is lost
    page.keyboard.press("a")
    expect(page.locator("#toast")).to_have_text(f"#{ids[0]} approved. Press u to undo. Undo")
    page.keyboard.press("u")  # the queue reloads: before, the toast went with it and nothing was said
    expect(page.locator("#toast")).to_have_text(f"#{ids[0]} back to held.")
    expect(page.locator("#items .item")).to_have_count(2)
    page.reload()
    keys_ready(page)
    # Said once, not after every reload: shown again, it would stay up for 4 s, past this wait.
    expect(page.locator("#toast")).to_be_hidden(timeout=1000)
    assert statuses(engine) == dict.fromkeys(ids, "held")


def test_after_an_undo_the_comment_it_brought_back_is_current(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """The reload after an undo made the page's first comment current, wherever the browser scrolled: the
    next `a` approved a comment the moderator never saw."""
    ids = seed_held(engine, site_id, 6, varied_lengths=True)
    sign_in(page, web, accounts["moderator"])
    expect(page.locator("#items .item").first).to_be_focused()
    for _ in range(3):
        page.keyboard.press("j")
    expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(ids[3]))
    page.keyboard.press("a")
    expect(page.locator("#items .item")).to_have_count(5)
    page.keyboard.press("u")
    expect(page.locator("#toast")).to_have_text(f"#{ids[3]} back to held.")
    expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(ids[3]))
    keys_ready(page)
    page.keyboard.press("a")
    expect(page.locator("#items .item")).to_have_count(5)
    assert statuses(engine) == {**dict.fromkeys(ids, "held"), ids[3]: "approved"}


def test_a_key_never_acts_on_a_comment_scrolled_out_of_view(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """Scrolled away with the mouse (or by the browser restoring a position), `a` first shows the current
    comment and says so; only a second `a` approves it."""
    ids = seed_held(engine, site_id, 12, varied_lengths=True)
    page.set_viewport_size({"width": 1280, "height": 600})
    sign_in(page, web, accounts["moderator"])
    expect(page.locator("#items .item").first).to_be_focused()
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    expect(page.locator(f"#c{ids[0]}")).not_to_be_in_viewport()
    page.keyboard.press("a")
    expect(page.locator("#toast")).to_contain_text(f"#{ids[0]} was out of view and is shown now")
    expect(page.locator(f"#c{ids[0]} .item-head")).to_be_in_viewport()
    assert statuses(engine) == dict.fromkeys(ids, "held")
    page.keyboard.press("a")
    expect(page.locator("#items .item")).to_have_count(11)
    assert statuses(engine) == {**dict.fromkeys(ids, "held"), ids[0]: "approved"}


def test_the_toast_after_an_action_has_an_undo_button_for_pointers_and_phones(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    ids = seed_held(engine, site_id, 2)
    sign_in(page, web, accounts["moderator"])
    page.locator(f"#c{ids[0]} .approve-form button").click()
    expect(page.locator("#items .item")).to_have_count(1)
    page.locator("#toast .toast-undo").click()
    expect(page.locator("#toast")).to_have_text(f"#{ids[0]} back to held.")
    expect(page.locator("#items .item")).to_have_count(2)
    assert statuses(engine) == dict.fromkeys(ids, "held")


def end_the_session(page: Page, web: str) -> None:
    """Sign out in another tab of the same browser: every copy of the session stops working."""
    other = page.context.new_page()
    other.goto(f"{web}/dashboard/queue")
    other.click("#logout")
    expect(other).to_have_url(f"{web}/dashboard/login")
    other.close()


def expect_sign_in_again(page: Page) -> None:
    expect(page.locator("#toast")).to_contain_text("Your session has ended: sign in again")
    link = page.locator("#toast a#sign-in-again")
    expect(link).to_have_attribute("href", re.compile(r"^/dashboard/login\?next="))
    expect(page.locator("#toast")).not_to_contain_text("answered 200")


def test_an_action_after_the_session_ended_says_sign_in_again(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    ids = seed_held(engine, site_id, 2)
    sign_in(page, web, accounts["moderator"])
    end_the_session(page, web)
    page.keyboard.press("a")  # the server answers 401 signed_out
    expect_sign_in_again(page)
    page.locator("#toast a#sign-in-again").click()
    expect(page.locator("#login-form")).to_be_visible()
    assert statuses(engine) == dict.fromkeys(ids, "held")


def test_an_action_redirected_to_the_sign_in_page_says_sign_in_again(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    ids = seed_held(engine, site_id, 1)
    actions = ActionRequests(page)
    sign_in(page, web, accounts["moderator"])
    end_the_session(page, web)

    def as_a_page(route: Route) -> None:  # a request that asks for a page is redirected to sign in, not told 401
        route.continue_(headers={**route.request.headers, "accept": "text/html"})

    actions.rewrite(as_a_page)
    page.keyboard.press("a")
    expect_sign_in_again(page)
    assert statuses(engine) == dict.fromkeys(ids, "held")


def test_u_after_another_account_signed_in_in_the_same_tab_undoes_nothing_of_the_first_ones(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """The last action is kept for `u` in the tab, and was forgotten only when Sign out was clicked in that tab:
    after a session that ended otherwise (sign-out in another tab, a time-out), whoever signed in next in the tab
    undid, with `u`, the first moderator's verdict (the server lets any moderator undo). `u` is "your" last
    action: one kept for another account is not offered."""
    ids = seed_held(engine, site_id, 2)
    sign_in(page, web, accounts["moderator"])
    expect(page.locator("#items .item").first).to_be_focused()  # dashboard.js runs: a key before is lost
    page.keyboard.press("a")
    expect(page.locator("#toast")).to_contain_text(f"#{ids[0]} approved. Press u to undo.")
    end_the_session(page, web)  # in another tab: this one keeps the action
    sign_in(page, web, accounts["admin"])
    expect(page.locator("#items .item").first).to_be_focused()
    page.keyboard.press("u")
    expect(page.locator("#toast")).to_have_text("Nothing to undo yet.")
    page.wait_for_timeout(300)
    assert statuses(engine) == {ids[0]: "approved", ids[1]: "held"}
    assert [(a[0], a[1]) for a in audit(engine)] == [(ids[0], "approve")]
    # The first moderator, back in the tab, still has it to undo.
    end_the_session(page, web)
    sign_in(page, web, accounts["moderator"])
    expect(page.locator("#items .item").first).to_be_focused()
    page.keyboard.press("u")
    expect(page.locator("#toast")).to_have_text(f"#{ids[0]} back to held.")
    assert statuses(engine) == dict.fromkeys(ids, "held")


def test_a_comment_the_site_deleted_cannot_be_acted_on(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    ids = seed_held(engine, site_id, 1)
    with make_session_factory(engine).begin() as session:
        session.get(Comment, ids[0]).status = "deleted"
    sign_in(page, web, accounts["moderator"])
    page.goto(f"{web}/dashboard/comments/{ids[0]}")
    expect(page.locator(".deleted-note")).to_have_text("Deleted by the site: nothing to review.")
    expect(page.locator(".item button")).to_have_count(0)
    page.keyboard.press("a")
    expect(page.locator("#toast")).to_have_text("Deleted by the site: nothing to review.")
    page.keyboard.press("r")
    page.keyboard.press("1")
    page.wait_for_timeout(300)
    assert statuses(engine) == {ids[0]: "deleted"}
    assert audit(engine) == []


def count_what_the_toast_says(page: Page) -> None:
    """From now on, count each time the toast (role="status": a screen reader reads out each new text) is given
    a text; ``toast_said`` reads the count."""
    page.evaluate(
        """() => {
            window.toastSaid = 0;
            new MutationObserver((records) => {
                window.toastSaid += records.filter((record) => record.addedNodes.length).length;
            }).observe(document.getElementById("toast"), { childList: true });
        }"""
    )


def toast_said(page: Page) -> int:
    return int(page.evaluate("() => window.toastSaid"))


def test_r_on_a_comment_the_site_deleted_says_so_once(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """`r` on a deleted comment gave the toast its note twice (once as no action can be taken, once as the `r`
    refused), and a screen reader said "Deleted by the site: nothing to review." twice. (A deleted comment is in
    no queue: its page, opened from the queue or a link, is where the keys meet it.)"""
    ids = seed_held(engine, site_id, 1)
    with make_session_factory(engine).begin() as session:
        session.get_one(Comment, ids[0]).status = "deleted"
    sign_in(page, web, accounts["moderator"])
    page.goto(f"{web}/dashboard/comments/{ids[0]}")
    expect(page.locator(".deleted-note")).to_be_visible()
    count_what_the_toast_says(page)
    page.keyboard.press("r")
    expect(page.locator("#toast")).to_have_text("Deleted by the site: nothing to review.")
    page.wait_for_timeout(300)  # any second saying has had its time
    assert toast_said(page) == 1
    # The rest of the reject typed by habit is still the refused `r`'s: said once each, and nothing acts.
    page.keyboard.press("2")
    expect(page.locator("#toast")).to_contain_text("No reject was started")
    page.keyboard.press("Enter")
    expect(page.locator("#toast")).to_have_text("Deleted by the site: nothing to review. Nothing was sent.")
    assert toast_said(page) == 3
    page.keyboard.press("a")  # `a` was said once before, and is still
    expect(page.locator("#toast")).to_have_text("Deleted by the site: nothing to review.")
    page.wait_for_timeout(300)
    assert toast_said(page) == 4
    assert statuses(engine) == {ids[0]: "deleted"} and audit(engine) == []


def all_queue_with_the_first_rejected(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int, count: int
) -> list[int]:
    """``count`` comments, the first already rejected and current, on the "all" tab (where it is listed)."""
    ids = seed_held(engine, site_id, count)
    with make_session_factory(engine).begin() as session:
        session.get_one(Comment, ids[0]).status = "rejected"
    sign_in(page, web, accounts["moderator"])
    page.goto(f"{web}/dashboard/queue?queue=all")
    expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(ids[0]))
    return ids


def test_enter_after_an_r_refused_does_not_open_the_comment(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """`r` on a comment already rejected says so and starts no reject; the `2` and Enter typed after it, the rest
    of that reject, then opened the comment's page: Enter read as `o`, and the moderator was taken off the queue."""
    ids = all_queue_with_the_first_rejected(page, web, accounts, engine, site_id, 2)
    toast = page.locator("#toast")
    page.keyboard.press("r")
    expect(toast).to_have_text("This comment is already rejected.")
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    expect(toast).to_contain_text("already rejected")
    page.wait_for_timeout(500)  # long enough for a page to start loading
    expect(page).to_have_url(f"{web}/dashboard/queue?queue=all")
    # The same without the reason's digit; and out of view, where `r` is refused until pressed again.
    page.keyboard.press("r")
    page.keyboard.press("Enter")
    page.wait_for_timeout(500)
    expect(page).to_have_url(f"{web}/dashboard/queue?queue=all")
    page.keyboard.press("j")
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.set_viewport_size({"width": 1280, "height": 300})
    page.evaluate("window.scrollTo(0, 0)")
    expect(page.locator(f"#c{ids[1]} .item-head")).not_to_be_in_viewport()
    page.keyboard.press("r")
    expect(toast).to_contain_text(f"#{ids[1]} was out of view and is shown now")
    page.keyboard.press("Enter")
    page.wait_for_timeout(500)
    expect(page).to_have_url(f"{web}/dashboard/queue?queue=all")
    assert audit(engine) == [] and statuses(engine) == {ids[0]: "rejected", ids[1]: "held"}
    # Enter by itself, after that, opens the current comment as the keys say.
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"/dashboard/comments/{ids[1]}\?queue="))


def test_a_note_typed_after_an_r_refused_acts_on_nothing(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """Typed by habit after an `r` refused on a rejected comment, the reason and the note were read as keys: the
    "a" of "bad advice" approved the comment the moderator meant to reject."""
    ids = all_queue_with_the_first_rejected(page, web, accounts, engine, site_id, 1)
    page.keyboard.press("r")
    expect(page.locator("#toast")).to_have_text("This comment is already rejected.")
    page.keyboard.type("2bad advice")
    expect(page.locator("#toast")).to_contain_text("keys do nothing until Enter or Esc")
    page.keyboard.press("Enter")
    expect(page.locator("#toast")).to_have_text("This comment is already rejected. Nothing was sent.")
    page.wait_for_timeout(500)  # long enough for an approve to be saved, or a page to start loading
    expect(page).to_have_url(f"{web}/dashboard/queue?queue=all")
    assert statuses(engine) == {ids[0]: "rejected"} and audit(engine) == []
    page.keyboard.press("a")  # the keys act again after the Enter
    expect(page.locator("#toast")).to_contain_text(f"#{ids[0]} approved.")


def test_a_reject_typed_while_the_last_action_is_saved_acts_on_nothing(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """`a` on the first comment, then straight away "r 2 bad advice Enter" for the next: the `r` and the digit came
    while the approve was saved and were dropped, and once it was answered the "a" of "advice" approved the
    comment the moderator meant to reject (a cold review's finding)."""
    ids = seed_held(engine, site_id, 2)
    held: list[Route] = []

    def hold_the_first(route: Route) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)

    page.context.route("**/act", hold_the_first)  # on the context, before the page loads (see the focus test)
    sign_in(page, web, accounts["moderator"])
    expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(ids[0]))
    keys_ready(page)
    page.keyboard.press("a")
    for _ in range(50):  # the route's handler runs as the page waits
        if held:
            break
        page.wait_for_timeout(100)
    assert len(held) == 1, "the approve was not held"
    page.keyboard.press("r")
    page.keyboard.press("2")
    expect(page.locator("#toast")).to_contain_text("keys do nothing until Enter or Esc")
    held[0].continue_()
    expect(page.locator("#toast")).to_contain_text(f"#{ids[0]} approved.")
    expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(ids[1]))
    page.keyboard.type("bad advice")
    page.keyboard.press("Enter")
    page.wait_for_timeout(500)  # long enough for an approve to be saved, or a page to start loading
    expect(page).to_have_url(re.compile(r"/dashboard/queue"))
    assert statuses(engine) == {ids[0]: "approved", ids[1]: "held"}, audit(engine)


def test_j_past_the_last_comment_says_where_the_rest_are(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """On the page's last comment `j` moved nothing and said nothing; it now names the link to the next page."""
    ids = seed_held(engine, site_id, 27)  # a page holds 25
    sign_in(page, web, accounts["moderator"])
    expect(page.locator("#items .item").first).to_be_focused()
    page.keyboard.press("k")
    expect(page.locator("#toast")).to_have_text("This is the first comment.")
    for _ in range(25):
        page.keyboard.press("j")
    expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(ids[24]))
    expect(page.locator("#toast")).to_have_text('This is the last comment on this page: "Next →" shows more.')
    page.click('.pager a[rel="next"]')
    keys_ready(page)
    page.keyboard.press("j")
    page.keyboard.press("j")
    expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(ids[26]))
    expect(page.locator("#toast")).to_have_text("This is the last comment.")
    assert statuses(engine) == dict.fromkeys(ids, "held")


def test_back_from_a_comments_page_returns_to_the_comment_that_was_current(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """Opened with `o` and left with Back, the queue loads again: it made its first comment current, so the
    next `a` acted on a comment away from where the moderator was reading."""
    ids = seed_held(engine, site_id, 8, varied_lengths=True)
    sign_in(page, web, accounts["moderator"])
    expect(page.locator("#items .item").first).to_be_focused()
    for _ in range(5):
        page.keyboard.press("j")
    page.keyboard.press("o")
    expect(page).to_have_url(re.compile(rf"/dashboard/comments/{ids[5]}\?queue="))
    page.go_back()
    expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(ids[5]))
    keys_ready(page)
    page.keyboard.press("a")
    expect(page.locator("#items .item")).to_have_count(7)
    assert statuses(engine) == {**dict.fromkeys(ids, "held"), ids[5]: "approved"}


def test_the_queue_link_of_a_comments_page_returns_to_that_comment_with_the_queues_filters(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int
) -> None:
    """The "← Queue" link went to the held queue's first page with its first comment current, where Back
    kept the place: a moderator who used the link lost the filters and the comment."""
    ids = seed_held(engine, site_id, 6)
    sign_in(page, web, accounts["moderator"])
    page.goto(f"{web}/dashboard/queue?queue=held&sort=oldest")
    keys_ready(page)
    for _ in range(3):
        page.keyboard.press("j")
    current = page.locator(".item.current").get_attribute("data-comment-id")
    page.keyboard.press("o")
    expect(page).to_have_url(re.compile(rf"/dashboard/comments/{current}\?queue="))
    page.click("#back-to-queue")
    expect(page).to_have_url(f"{web}/dashboard/queue?queue=held&sort=oldest#c{current}")
    expect(page.locator(".item.current")).to_have_attribute("data-comment-id", str(current))
    keys_ready(page)
    page.keyboard.press("a")
    expect(page.locator("#items .item")).to_have_count(5)
    assert statuses(engine) == {**dict.fromkeys(ids, "held"), int(current or 0): "approved"}
