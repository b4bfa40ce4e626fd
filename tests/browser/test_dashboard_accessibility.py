"""Every dashboard page a moderator or an admin sees, audited with axe-core: no serious or critical violations.

The session's web server and one signed-in browser context per role serve the whole module (the pages are
only read, apart from the new-secret page, which adds a site, and the forms refused, which store nothing).
axe-core comes bundled with axe-playwright-python, so the audit runs offline.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, expect
from sqlalchemy import select

from models.db import create_db_engine, make_session_factory
from models.entities import Moderator, Site
from moderation import registry
from moderation.lists import add_entry
from moderation.review import record_verdict
from moderation.sites import create_site
from tests.browser.conftest import SharedWeb
from tests.browser.helpers import seed_held, sign_in
from tests.conftest import clean_database
from tests.support.dashboard import add_moderator, dead_callback, held_comment

BLOCKING = ("serious", "critical")
MODERATOR, ADMIN = "mod@example.org", "admin@example.org"
# Held-out scores in the model card: the threshold page's what-if and PR curves are drawn from them.
EVALUATION_SCORES = {
    "spam": [0.01, 0.02, 0.04, 0.05, 0.1, 0.3, 0.5, 0.95, 0.85, 0.1],
    "medical_advice": [0.02, 0.05, 0.1, 0.2, 0.3, 0.05, 0.01, 0.01, 0.02, 0.9],
    "links": [0] * 10,
    "is_spam": [False] * 7 + [True, True, False],
    "is_medical_advice": [False] * 9 + [True],
}


def card(version: str) -> dict[str, Any]:
    return {
        "version": version,
        "thresholds": {"spam_reject": 0.8, "spam_hold": 0.2, "advice_hold": 0.4},
        "evaluation_scores": EVALUATION_SCORES,
        "metrics": {
            "policy_own_held_out": {
                "leak_rate": 0.02,
                "ordinary_held": 0.1,
                "ordinary_rejected": 0.0,
                "review_load": 0.2,
            },
            "held_out_by_source": {"own": {"spam": {"f1": 0.9, "pr_auc": 0.95}}},
        },
    }


@dataclass(frozen=True)
class Seeded:
    base: str
    site_id: int
    comment_id: int


@pytest.fixture(scope="module")
def seeded(
    database_url: str, redis_server_url: str, shared_web: SharedWeb, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Seeded]:
    """The session's web server on data that fills every page: held and reviewed comments, a dead callback, a
    list entry, two model versions (one active), a moderator and an admin."""
    tmp = tmp_path_factory.mktemp("accessibility")
    engine = create_db_engine(database_url)
    clean_database(engine)
    redis.Redis.from_url(redis_server_url).flushdb()
    now = datetime.now(UTC)
    with make_session_factory(engine).begin() as session:
        add_moderator(session, MODERATOR)
        add_moderator(session, ADMIN, "admin")
        site, _ = create_site(session, "backpain-advisor", "https://backpain.example/moderation-callback")
        site_id = site.id
    seed_held(engine, site_id, 3)
    with make_session_factory(engine).begin() as session:
        site = session.get_one(Site, site_id)
        admin = session.scalars(select(Moderator).where(Moderator.email == ADMIN)).one()
        comment_id, decision_id = held_comment(
            session, site, "reviewed", "Take <b>800mg</b> ibuprofen & skip the physio.", age=timedelta(hours=2)
        )
        record_verdict(session, comment_id, admin, "reject", "other", "dosing advice", decision_id, now)
        # Long enough to scroll inside its card in the queue: the scrolling text must be reachable by keyboard.
        held_comment(session, site, "long", "My back story, from the start. " * 200, age=timedelta(hours=1))
        dead_callback(session, site_id, comment_id, decision_id)  # the held decision's: its own has one pending
        add_entry(session, "block", "domain", "cheap-rx-pharmacy.example", None, admin.id, now)
        for version in ("model-a", "model-b"):
            path = tmp / f"{version}.skops"
            path.write_bytes(version.encode())
            registry.register(session, version, registry.SavedArtifact(path, registry.file_sha256(path)), card(version))
        registry.activate(session, "model-a")
    try:
        assert shared_web.process.alive(), f"the shared web server has exited:\n{shared_web.process.log()[-3000:]}"
        yield Seeded(shared_web.base, site_id, comment_id)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def pages(browser: Browser, seeded: Seeded) -> Iterator[dict[str, Page]]:
    """A browser context per role, signed in once: "anonymous", "moderator" and "admin"."""
    contexts: list[BrowserContext] = []
    opened: dict[str, Page] = {}
    for role, email in (("anonymous", None), ("moderator", MODERATOR), ("admin", ADMIN)):
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        if email:
            sign_in(page, seeded.base, email)
        opened[role] = page
    yield opened
    for context in contexts:
        context.close()


def wrong_password(page: Page, seeded: Seeded) -> None:
    page.fill('input[name="email"]', MODERATOR)
    page.fill('input[name="password"]', "not the password")
    page.click('button[type="submit"]')
    expect(page.locator(".flash.error")).to_be_visible()


def help_open(page: Page, seeded: Seeded) -> None:
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()


def reject_composed(page: Page, seeded: Seeded) -> None:
    page.keyboard.press("x")
    page.keyboard.press("r")
    expect(page.locator(".item.current .reject-reasons")).to_have_class(re.compile(r"\bopen\b"))
    expect(page.locator(".item.current")).to_have_class(re.compile(r"\bselected\b"))


def answered(status: int, body: dict[str, Any], shown: str) -> Callable[[Page, Seeded], None]:
    """An approve the server answers with ``status`` and ``body`` (faked in the browser: nothing is saved), and
    the toast the page shows for it."""

    def then(page: Page, seeded: Seeded) -> None:
        page.route("**/act", lambda route: route.fulfill(status=status, json=body))
        try:
            # A route added to a page already loaded takes effect a moment later (see ActionRequests): the page
            # loaded anew uses it from the start.
            page.reload()
            page.keyboard.press("a")
            expect(page.locator("#toast")).to_contain_text(shown)
        finally:
            page.unroute("**/act")

    return then


def charts_drawn(page: Page, seeded: Seeded) -> None:
    expect(page.locator('#overview-charts[data-drawn="true"]')).to_be_attached()


def new_site(page: Page, seeded: Seeded) -> None:
    page.fill('input[name="name"]', "audited-site")
    page.click('form[action$="/admin/sites"] button[type="submit"]')
    expect(page.locator("#new-secret")).to_be_visible()


def site_refused(page: Page, seeded: Seeded) -> None:
    """The Sites page answering a new site it refuses (422): the name typed, taken, kept in its field."""
    page.fill('input[name="name"]', "backpain-advisor")
    page.click('form[action$="/admin/sites"] button[type="submit"]')
    expect(page.locator("main .flash.error")).to_contain_text("a site named 'backpain-advisor' already exists")


def callback_url_refused(page: Page, seeded: Seeded) -> None:
    """The Sites page answering a callback URL it refuses (422): the URL typed kept in that site's field."""
    form = page.locator(f'form[action$="/admin/sites/{seeded.site_id}/callback"]')
    form.locator('input[name="callback_url"]').fill("ftp://backpain.example/moderation-callback")
    form.locator('button[type="submit"]').click()
    expect(page.locator("main .flash.error")).to_contain_text("Callback URL of backpain-advisor not saved")


def entry_refused(page: Page, seeded: Seeded) -> None:
    """The Lists page answering an entry it refuses (422): the list, field and value kept as chosen and typed."""
    form = page.locator('form[action$="/admin/lists"]')
    form.locator('select[name="field"]').select_option("domain")
    form.locator('input[name="value"]').fill("cheap-rx-pharmacy.example")
    form.locator('button[type="submit"]').click()
    expect(page.locator("main .flash.error")).to_contain_text("is already on that list")


@dataclass(frozen=True)
class Screen:
    role: str
    path: str  # {site} and {comment} are filled in from the seeded data
    then: Callable[[Page, Seeded], None] | None = None
    status: int = 200


SCREENS = {
    "login": Screen("anonymous", "/dashboard/login"),
    "login-refused": Screen("anonymous", "/dashboard/login", wrong_password),
    "overview": Screen("moderator", "/dashboard/overview", charts_drawn),
    "queue-held": Screen("moderator", "/dashboard/queue"),
    "queue-all": Screen("moderator", "/dashboard/queue?queue=all"),
    "queue-keyboard-help": Screen("moderator", "/dashboard/queue", help_open),
    "queue-reject-composed": Screen("moderator", "/dashboard/queue", reject_composed),
    "queue-conflict": Screen(
        "moderator",
        "/dashboard/queue",
        answered(409, {"ok": False, "message": "admin@example.org acted on it first"}, "acted on it first"),
    ),
    "queue-signed-out": Screen(
        "moderator", "/dashboard/queue", answered(401, {"error": "signed_out"}, "Your session has ended")
    ),
    "comment": Screen("moderator", "/dashboard/comments/{comment}"),
    "error-404": Screen("moderator", "/dashboard/comments/999999", status=404),
    "error-403": Screen("moderator", "/dashboard/admin/sites", status=403),
    "admin-sites": Screen("admin", "/dashboard/admin/sites"),
    "admin-secret": Screen("admin", "/dashboard/admin/sites", new_site),
    # Refused (422): the page again with the reason and what was typed; nothing stored.
    "admin-sites-refused": Screen("admin", "/dashboard/admin/sites", site_refused),
    "admin-sites-callback-refused": Screen("admin", "/dashboard/admin/sites", callback_url_refused),
    "admin-thresholds": Screen("admin", "/dashboard/admin/sites/{site}/thresholds"),
    "admin-thresholds-previewed": Screen(
        "admin", "/dashboard/admin/sites/{site}/thresholds?spam_reject=0.8&spam_hold=0.2&advice_hold=0.3"
    ),
    # Refused (422): the values sent kept in the sliders, one of them no number (its output says it as sent).
    "admin-thresholds-refused": Screen(
        "admin", "/dashboard/admin/sites/{site}/thresholds?spam_reject=abc&spam_hold=0.9&advice_hold=0.3", status=422
    ),
    "admin-lists": Screen("admin", "/dashboard/admin/lists"),
    "admin-lists-refused": Screen("admin", "/dashboard/admin/lists", entry_refused),
    "admin-moderators": Screen("admin", "/dashboard/admin/moderators"),
    "admin-callbacks": Screen("admin", "/dashboard/admin/callbacks"),
    "admin-models": Screen("admin", "/dashboard/admin/models"),
}


def report(violations: list[dict[str, Any]]) -> str:
    """Each violation's rule, impact and help, and the selectors of the elements that fail it."""
    lines = []
    for violation in violations:
        lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']} <{violation['helpUrl']}>")
        for node in violation["nodes"]:
            target = " ".join(str(part) for part in node["target"])
            lines.append(f"    {target}: {node.get('failureSummary', '').replace(chr(10), ' ')}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def axe() -> Axe:
    return Axe()


@pytest.mark.parametrize("name", list(SCREENS))
def test_no_serious_or_critical_accessibility_violations(
    name: str, pages: dict[str, Page], seeded: Seeded, axe: Axe
) -> None:
    screen = SCREENS[name]
    page = pages[screen.role]
    url = seeded.base + screen.path.format(site=seeded.site_id, comment=seeded.comment_id)
    response = page.goto(url, wait_until="networkidle")
    assert response is not None and response.status == screen.status, f"{url}: {response and response.status}"
    if screen.then is not None:
        screen.then(page, seeded)
    violations = axe.run(page).response["violations"]
    blocking = [v for v in violations if v["impact"] in BLOCKING]
    others = [v for v in violations if v["impact"] not in BLOCKING]
    if others:
        print(f"{name}: moderate or minor violations left:\n{report(others)}")
    assert not blocking, f"{name} ({page.url}) has serious or critical accessibility violations:\n{report(blocking)}"


def chart_labels_once_drawn(page: Page, expected: str) -> list[str]:
    """The PR chart's datasets once one is ``expected``."""
    return chart_labels_once(page, lambda labels: expected in labels)


def chart_labels_once(page: Page, drawn: Callable[[list[str]], bool]) -> list[str]:
    """The PR chart's datasets once ``drawn`` holds for them, or as they are after 10 s (the page's CSP refuses
    wait_for_function's string eval)."""
    deadline = time.monotonic() + 10
    while True:
        labels: list[str] = page.evaluate(
            "() => window.Chart?.getChart(document.getElementById('chart-pr'))?.data.datasets.map((d) => d.label) ?? []"
        )
        if drawn(labels) or time.monotonic() > deadline:
            return labels
        page.wait_for_timeout(100)


def test_the_pr_chart_marks_the_reject_line_beside_the_hold_lines(pages: dict[str, Page], seeded: Seeded) -> None:
    """Moving "Reject as spam" moved no mark: the chart showed only the two hold lines. (Here, where the active
    model's card holds evaluation scores to draw the curves from.)"""
    page = pages["admin"]
    page.goto(f"{seeded.base}/dashboard/admin/sites/{seeded.site_id}/thresholds")
    assert "spam reject at 0.80" in chart_labels_once_drawn(page, "spam reject at 0.80")  # the model's, on opening
    page.locator('#threshold-form input[name="spam_reject"]').fill("0.9")
    labels = chart_labels_once_drawn(page, "spam reject at 0.90")
    assert [label for label in labels if " at " in label] == [
        "spam hold at 0.20",
        "spam reject at 0.90",
        "medical advice hold at 0.40",
    ]
    page.locator('#threshold-form input[name="spam_reject"]').fill("0.5")
    assert "spam reject at 0.50" in chart_labels_once_drawn(page, "spam reject at 0.50")


def test_a_page_with_refused_values_draws_the_curves_with_no_lines_marked(
    pages: dict[str, Page], seeded: Seeded
) -> None:
    """The values refused are no proposal to mark; the saved ones marked there would read as if they were."""
    page = pages["admin"]
    page.goto(f"{seeded.base}/dashboard/admin/sites/{seeded.site_id}/thresholds?spam_reject=0.5&spam_hold=0.6")
    expect(page.locator("#threshold-refused")).to_be_visible()
    assert chart_labels_once_drawn(page, "medical advice PR") == ["spam PR", "medical advice PR"]


def test_values_the_preview_refuses_leave_no_line_marked_on_the_chart(pages: dict[str, Page], seeded: Seeded) -> None:
    """Refused, the figures showed none while the chart went on marking the last valid proposal's lines, as if
    they were what the sliders showed now."""
    page = pages["admin"]
    page.goto(f"{seeded.base}/dashboard/admin/sites/{seeded.site_id}/thresholds")
    assert "spam reject at 0.80" in chart_labels_once_drawn(page, "spam reject at 0.80")
    page.locator('#threshold-form input[name="spam_reject"]').fill("0.1")  # under the spam hold, 0.20
    expect(page.locator("#threshold-problem")).to_be_visible()
    expect(page.locator('[data-saved-source="spam_reject"]')).to_have_text("–")
    unmarked = ["spam PR", "medical advice PR"]
    assert chart_labels_once(page, lambda labels: labels == unmarked) == unmarked
    # Values it takes again are marked again.
    page.locator('#threshold-form input[name="spam_reject"]').fill("0.9")
    expect(page.locator("#threshold-problem")).to_be_hidden()
    assert "spam reject at 0.90" in chart_labels_once_drawn(page, "spam reject at 0.90")
