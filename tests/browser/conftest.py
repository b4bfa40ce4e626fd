"""Browser tests: Playwright driving Debian's Chromium against the real web server (gunicorn subprocess).

They run on SQLite only (the Flask-client tests cover PostgreSQL) and skip, saying why, when
/usr/bin/chromium is missing (`make test` installs it where it can: see the Makefile).

One web server serves the whole session (starting and stopping gunicorn costs several seconds, more than most
tests take). Each test still starts from empty tables and an empty Redis database (the ``engine`` and
``redis_url`` fixtures behind ``web``) and its own browser context, closed before the server stops. A page
left over from an earlier test cannot act on a later one's rows: its session cookie names a moderator token
that the emptied table no longer holds.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from models.db import make_session_factory
from models.entities import Moderator, Role
from moderation.accounts import hash_password
from moderation.sites import create_site
from server.settings import Settings
from tests.conftest import fast_settings
from tests.support.dashboard import PASSWORD
from tests.support.processes import ServiceProcess, Stack

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

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

# Assertions wait as long as actions do (the page fixture's 15 s): on a CI machine busy with the rest of the suite
# a preview answered after 5 s, the default, and a refusal the page did show failed a test.
expect.set_options(timeout=15_000)


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


@dataclass(frozen=True)
class SharedWeb:
    """The session's web server: its address and process (whose log a failed test's report shows)."""

    base: str
    process: ServiceProcess


SHARED_WEB_LOG = pytest.StashKey[tuple[ServiceProcess, int]]()


@pytest.fixture(scope="session")
def shared_web(
    database_url: str, redis_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedWeb]:
    """One web server for every browser test; each test empties the tables and Redis it reads (see ``web``)."""
    tmp = tmp_path_factory.mktemp("browser-web")
    # Secrets read afresh on every request: a site an earlier test made under the same name is long gone.
    settings = fast_settings(database_url, redis_server_url, tmp / "var").model_copy(update={"site_cache_seconds": 0})
    stack = Stack(settings, tmp)
    try:
        process, base = stack.web()
        yield SharedWeb(base, process)
    finally:
        stack.stop_all()


@pytest.fixture
def web(request: pytest.FixtureRequest, shared_web: SharedWeb, engine: Engine, redis_url: str) -> str:
    """The shared web server's address, for a test that starts from empty tables (``engine``) and an empty
    Redis database (``redis_url``: sign-in limits, used request ids, queued tasks)."""
    process = shared_web.process
    assert process.alive(), f"the shared web server has exited:\n{process.log()[-3000:]}"
    request.node.stash[SHARED_WEB_LOG] = (process, len(process.log()))
    return shared_web.base


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report shows what the shared web server logged while it ran."""
    report = yield
    if report.failed and SHARED_WEB_LOG in item.stash:
        process, start = item.stash[SHARED_WEB_LOG]
        logged = process.log()[start:]
        if logged:
            report.sections.append(("shared web server log", logged[-4000:]))
    return report


@pytest.fixture(scope="session")
def password_hash() -> str:
    """The argon2 hash of the tests' PASSWORD, made once (each hash takes a good part of a second here)."""
    return hash_password(PASSWORD)


@pytest.fixture
def accounts(engine: Engine, password_hash: str) -> dict[str, str]:
    """A moderator and an admin, both with PASSWORD (the rows ``add_moderator`` makes, with the hash made once);
    each row gets its own random session token, so no earlier test's cookie signs in as them."""
    now = datetime.now(UTC)
    with make_session_factory(engine).begin() as session:
        for email, role in (("mod@example.org", Role.MODERATOR), ("admin@example.org", Role.ADMIN)):
            session.add(Moderator(email=email, password_hash=password_hash, role=role, created_at=now))
    return {"moderator": "mod@example.org", "admin": "admin@example.org"}


@pytest.fixture
def site_id(engine: Engine) -> int:
    with make_session_factory(engine).begin() as session:
        site, _ = create_site(session, "backpain-advisor")
        return site.id
