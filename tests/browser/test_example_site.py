"""The first run, end to end: a comment typed on the example site goes through the real signed webhook,
a real worker holds it, the page shows its status from the callback, a moderator approves it in the
dashboard, and the site publishes it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine

from models.db import make_session_factory
from moderation.sites import create_site
from tests.browser.helpers import sign_in
from tests.browser.screens import screenshot_dir
from tests.conftest import TrainedModel
from tests.support.processes import ServiceProcess, Stack, answers, service_env, wait_until
from tests.support.services import free_port

ADVICE = "That's sciatica, not a muscle. Take 800mg ibuprofen every 6 hours and skip the physio."


@pytest.fixture
def example_site(engine: Engine, stack: Stack, web: str, tmp_path: Path) -> Iterator[tuple[str, ServiceProcess]]:
    """The example site posting to the session's web server (``stack`` runs this test's worker)."""
    port = free_port()
    secret_file = tmp_path / "example-site.secret"
    with make_session_factory(engine).begin() as session:
        _, secret = create_site(session, "example-site", f"http://127.0.0.1:{port}/moderation-callback")
    secret_file.write_text(secret)
    env = service_env(
        stack.settings,
        EXAMPLE_PORT=str(port),
        MODERATION_URL=web,
        EXAMPLE_SECRET_FILE=str(secret_file),
        EXAMPLE_DATA_FILE=str(tmp_path / "example-comments.json"),
    )
    process = ServiceProcess("example-site", [sys.executable, "-m", "examples.site"], env, tmp_path / "example.log")
    process.start()
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(f"{base}/massage-therapy"), timeout=30, what="example site", proc=process)
    yield base, process
    process.stop()


def test_a_comment_on_the_example_site_reaches_the_queue_and_comes_back_published(
    stack: Stack,
    web: str,
    example_site: tuple[str, ServiceProcess],
    accounts: dict[str, str],
    active_model: TrainedModel,
    page: Page,  # after the processes: its context is closed before they are stopped
    tmp_path: Path,
) -> None:
    site, _ = example_site
    stack.worker()
    dashboard = web

    page.goto(f"{site}/massage-therapy")
    expect(page.locator("h1")).to_have_text("Does Massage Therapy Really Help Back Pain?")
    page.fill('input[name="name"]', "Jan")
    page.fill('input[name="email"]', "jan@example.org")
    page.fill('textarea[name="body"]', ADVICE)
    page.click("#comment-form button")
    mine = page.locator("#mine li").first
    expect(mine).to_contain_text(ADVICE)
    expect(mine).to_contain_text("held for a moderator to review", timeout=60_000)
    expect(page.locator("#published")).not_to_contain_text(ADVICE)

    review = page.context.new_page()
    sign_in(review, dashboard, accounts["moderator"])
    item = review.locator("#items .item").first
    expect(item).to_contain_text(ADVICE)
    expect(item).to_contain_text("example-site")
    review.keyboard.press("a")
    expect(review.locator("#empty")).to_be_visible()

    expect(page.locator("#published")).to_contain_text(ADVICE, timeout=30_000)
    expect(mine).to_contain_text("published")
    page.screenshot(path=screenshot_dir(tmp_path) / "example-site.png", full_page=True)
