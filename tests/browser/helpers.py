"""Small steps the browser tests share."""

from __future__ import annotations

from playwright.sync_api import Page

from tests.support.dashboard import PASSWORD


def sign_in(page: Page, base: str, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/dashboard/login")
    page.fill('input[name="email"]', email)
    page.fill('input[name="password"]', password)
    page.click('button[type="submit"]')
    page.wait_for_url(f"{base}/dashboard/queue")
