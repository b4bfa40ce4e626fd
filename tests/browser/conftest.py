"""Browser tests: Playwright driving Debian's Chromium against the real web server (gunicorn subprocess).

They run on SQLite only (the Flask-client tests cover PostgreSQL) and skip, saying why, when
/usr/bin/chromium is missing (`make test` installs it where it can: see the Makefile).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from models.db import make_session_factory
from moderation.sites import create_site
from server.settings import Settings
from tests.support.dashboard import add_moderator
from tests.support.processes import Stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

if not CHROMIUM.exists():
    pytest.skip(
        "browser tests need Debian's Chromium at /usr/bin/chromium: apt-get install chromium "
        "(`make test` installs it when run as root)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every browser test is slow (a real browser and server); ``pytestmark`` in a conftest marks nothing."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", params=["sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite only here: one real browser run is enough; the Flask-client tests cover both databases."""
    from models.migrate import upgrade_database

    url = f"sqlite:///{tmp_path_factory.mktemp('browser-sqlite') / 'moderation.db'}"
    upgrade_database(url)
    yield url


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(settings, tmp_path)
    yield stack
    stack.stop_all()
    if sys.exc_info()[0] is not None:
        print(stack.logs())


@pytest.fixture
def web(stack: Stack) -> str:
    _, base = stack.web()
    return base


@pytest.fixture
def accounts(engine: Engine) -> dict[str, str]:
    with make_session_factory(engine).begin() as session:
        add_moderator(session, "mod@example.org")
        add_moderator(session, "admin@example.org", "admin")
    return {"moderator": "mod@example.org", "admin": "admin@example.org"}


@pytest.fixture
def site_id(engine: Engine) -> int:
    with make_session_factory(engine).begin() as session:
        site, _ = create_site(session, "backpain-advisor")
        return site.id
