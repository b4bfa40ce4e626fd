"""Small steps the browser tests share."""

from __future__ import annotations

from datetime import timedelta

from playwright.sync_api import Page
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
