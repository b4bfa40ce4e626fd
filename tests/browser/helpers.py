"""Small steps the browser tests share."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from re import Pattern

from playwright.sync_api import Page, Route
from sqlalchemy import Engine

from models.db import make_session_factory
from models.entities import Site
from tests.support.dashboard import PASSWORD, held_comment


def sign_in(page: Page, base: str, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/dashboard/login")
    page.fill('input[name="email"]', email)
    page.fill('input[name="password"]', password)
    page.click('button[type="submit"]')
    page.wait_for_url(f"{base}/dashboard/queue")


class RoutedRequests:
    """The requests of one page whose address matches ``url``: sent on to the server until a test holds them.

    Routed on the page's browser context before the page loads anything. A route added to a page already loaded
    takes effect in Chromium only a moment later, and a key pressed at once sent its request unrouted: full runs
    saw an approve the test meant to hold answered ("#2 approved"), twice in one test and once in another.
    """

    def __init__(self, page: Page, url: str | Pattern[str]) -> None:
        self.held: list[Route] = []
        self._handle: Callable[[Route], None] = send_on
        page.context.route(url, lambda route: self._handle(route))

    def hold(self) -> None:
        """Each request waits in ``held`` until the test sends it on (``held.pop().continue_()``)."""
        self._handle = self.held.append

    def rewrite(self, handle: Callable[[Route], None]) -> None:
        self._handle = handle

    def send_on(self) -> None:
        self._handle = send_on


class ActionRequests(RoutedRequests):
    """The dashboard's action requests (``**/act``) of one page."""

    def __init__(self, page: Page) -> None:
        super().__init__(page, "**/act")


def send_on(route: Route) -> None:
    route.continue_()


def keys_ready(page: Page) -> None:
    """After a reload the page started itself (an undo reloads the queue or the comment's page): its new rows
    can show before dashboard.js, a module script run just before DOMContentLoaded, listens for keys, and a key
    pressed in between is lost. (goto, reload and sign_in already wait for the page's load.)"""
    page.wait_for_load_state("domcontentloaded")


def seed_held(engine: Engine, site_id: int, count: int, *, varied_lengths: bool = False) -> list[int]:
    """``count`` held comments, oldest first; with ``varied_lengths`` one to three sentences each."""
    with make_session_factory(engine).begin() as session:
        site = session.get_one(Site, site_id)
        return [
            held_comment(
                session,
                site,
                f"c-{n}",
                (f"Comment {n}: take 800mg ibuprofen every 6 hours. " * (1 + n % 3 if varied_lengths else 1)).strip(),
                age=timedelta(hours=count - n),
            )[0]
            for n in range(count)
        ]
