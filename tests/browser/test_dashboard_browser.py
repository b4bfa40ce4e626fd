"""The dashboard in a real browser: sign-in, keyboard review, bulk actions, hostile text, CSRF, roles."""

# mypy: disable-error-code="union-attr, arg-type"

from __future__ import annotations

from datetime import timedelta

from playwright.sync_api import Dialog, Page, expect
from sqlalchemy import Engine, select

from models.db import make_session_factory
from models.entities import Comment, Site, TrainingLabel
from tests.browser.helpers import sign_in
from tests.support.dashboard import held_comment

XSS = (
    "<script>window.__pwned = 1; document.title = 'pwned'</script>"
    '<img src=x onerror="window.__pwned = 2"><svg onload="window.__pwned = 3"></svg>'
    '<a href="javascript:window.__pwned=4">click me</a> "\'><iframe src="javascript:parent.__pwned=5"></iframe>'
)


def seed_held(engine: Engine, site_id: int, count: int) -> list[int]:
    with make_session_factory(engine).begin() as session:
        site = session.get(Site, site_id)
        return [
            held_comment(
                session,
                site,
                f"c-{n}",
                f"Comment {n}: take 800mg ibuprofen every 6 hours.",
                age=timedelta(hours=count - n),
            )[0]
            for n in range(count)
        ]


def statuses(engine: Engine) -> dict[int, str]:
    with make_session_factory(engine)() as session:
        return {c.id: c.status for c in session.scalars(select(Comment))}


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
    page.keyboard.press("r")
    page.keyboard.press("1")  # reject the next as spam
    expect(items).to_have_count(2)
    page.keyboard.press("u")  # undo brings it back
    expect(items).to_have_count(3)
    page.keyboard.press("r")
    page.keyboard.press("2")  # medical advice
    expect(items).to_have_count(2)
    page.keyboard.press("r")
    page.keyboard.press("5")  # other: the note is focused
    page.keyboard.type("dating site bait")
    page.keyboard.press("Enter")
    expect(items).to_have_count(1)
    page.keyboard.press("a")
    expect(page.locator("#empty")).to_contain_text("The queue is clear")

    assert statuses(engine) == {ids[0]: "approved", ids[1]: "rejected", ids[2]: "rejected", ids[3]: "approved"}
    with make_session_factory(engine)() as session:
        labels = {
            label.comment_id: (label.spam, label.medical_advice) for label in session.scalars(select(TrainingLabel))
        }
    assert labels == {ids[0]: (False, False), ids[1]: (None, True), ids[3]: (False, False)}
    page.goto(f"{web}/dashboard/comments/{ids[1]}")
    expect(page.locator(".audit-row")).to_have_count(3)  # reject, undo, reject


def test_bulk_reject(page: Page, web: str, accounts: dict[str, str], engine: Engine, site_id: int) -> None:
    ids = seed_held(engine, site_id, 3)
    sign_in(page, web, accounts["moderator"])
    page.keyboard.press("x")
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("x")
    expect(page.locator("#selected-count")).to_have_text("2 selected")
    page.select_option("#bulk-reason", "spam")
    page.click('#bulk-form button[value="reject"]')
    expect(page.locator(".flash.info")).to_contain_text("reject: 2 comment(s) done.")
    expect(page.locator("#items .item")).to_have_count(1)
    assert statuses(engine) == {ids[0]: "rejected", ids[1]: "held", ids[2]: "rejected"}


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
