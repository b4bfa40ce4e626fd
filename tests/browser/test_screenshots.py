"""The main pages with realistic data decided by a real model; `UPDATE_SCREENSHOTS=1` refreshes docs/screenshots.

UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest tests/browser -k screenshots_or_example
"""

# mypy: disable-error-code="union-attr, arg-type"

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.sync_api import Page, expect
from sqlalchemy import Engine, select

from models.db import make_session_factory
from models.entities import Comment, Decision, Moderator
from moderation.decisions import decide_comment
from moderation.intake import NewComment, accept_comment
from moderation.review import record_verdict
from moderation.sites import create_site
from tests.browser.helpers import sign_in
from tests.browser.screens import screenshot_dir
from tests.conftest import TrainedModel

AUTHORS = [
    ("Jan", "jan@example.org", "203.0.113.9"),
    ("Priya", "priya@example.net", "198.51.100.23"),
    ("PainFreeNow", "deals@cheap-rx-pharmacy.xyz", "192.0.2.77"),
    ("Mark T.", "markt@example.com", "203.0.113.40"),
    ("Dr. Back", "info@backfix.example", "192.0.2.12"),
]
COMMENTS = [
    ("Thanks for this article, I had no idea massage could help with back pain.", 0),
    ("I tried a sports massage after my half marathon and my lower back felt loose for days.", 1),
    ("Best prices on pain pills, no prescription needed!!! Order now at www.cheap-rx-pharmacy.xyz", 2),
    ("That's sciatica, not a muscle. Take 800mg ibuprofen every 6 hours and skip the physio.", 3),
    ("My physio said the same: keep moving, massage is a bonus not a fix.", 1),
    ("Come off the gabapentin, it does nothing. Rub arnica in twice a day, it cures it.", 4),
    ("Earn $500 a day from home!! Click here www.easy-cash.example and www.easy-cash.example/join", 2),
    ("Sounds like a herniated disc to me. Don't let them operate, just crack your back hard every morning.", 3),
    ("Does anyone know if physio on the NHS covers massage? Asking for my mum.", 0),
    ("You don't need a doctor for this, try 5000 IU vitamin D daily and it will clear up.", 4),
    ("Best prices on pain pills, no prescription needed!!! Order now at www.cheap-rx-pharmacy.xyz", 2),
    ("Massage helped me a lot, but only with stretching too.", 0),
    ("My GP put me on naproxen and it took the edge off while I did the exercises.", 1),
    ("Stop taking the co-codamol and switch to 400mg ibuprofen three times a day with food.", 3),
]


def seed(engine: Engine, model: TrainedModel) -> tuple[int, list[int]]:
    """Comments over the last ten days, decided by the real model; some reviewed by a moderator."""
    now = datetime.now(UTC)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        site, _ = create_site(session, "backpain-advisor", "https://backpain.example/moderation-callback")
        ids = []
        for n, (body, author) in enumerate(COMMENTS):
            name, email, ip = AUTHORS[author]
            at = now - timedelta(days=9 - (n * 9) // len(COMMENTS), hours=n % 5, minutes=7 * n)
            new = NewComment(
                external_id=f"c-{1000 + n}",
                article_id="massage-therapy",
                body=body,
                article_url="https://backpain.example/massage-therapy",
                article_title="Does Massage Therapy Really Help Back Pain?",
                author_name=name,
                author_email=email,
                author_ip=ip,
            )
            accepted = accept_comment(session, site, f"msg_{n}", new, at)
            session.get(Comment, accepted.comment_id).received_at = at
            decide_comment(session, accepted.comment_id, model.model, at)
            ids.append(accepted.comment_id)
        admin = session.scalar(select(Moderator).where(Moderator.email == "admin@example.org"))
        held = [
            c for c in session.scalars(select(Comment).where(Comment.status == "held").order_by(Comment.received_at))
        ]
        for comment, (action, reason) in zip(
            held[:3], [("reject", "medical_advice"), ("approve", None), ("reject", "medical_advice")], strict=False
        ):
            current = session.scalar(select(Decision).where(Decision.comment_id == comment.id, Decision.is_current))
            record_verdict(
                session, comment.id, admin, action, reason, None, current.id, comment.received_at + timedelta(hours=3)
            )
        return site.id, ids


def test_screenshots_of_the_main_pages(
    page: Page, web: str, accounts: dict[str, str], engine: Engine, active_model: TrainedModel, tmp_path: Path
) -> None:
    site_id, _ids = seed(engine, active_model)
    shots = screenshot_dir(tmp_path)
    sign_in(page, web, accounts["admin"])

    expect(page.locator("#items .item").first).to_be_visible()
    page.screenshot(path=shots / "queue.png")

    page.goto(f"{web}/dashboard/queue?queue=rejected")
    page.locator("#items .item a.open").first.click()
    expect(page.locator(".audit-row").first).to_be_visible()
    page.screenshot(path=shots / "comment.png", full_page=True)

    page.goto(f"{web}/dashboard/overview")
    expect(page.locator('#overview-charts[data-drawn="true"]')).to_be_attached()
    page.screenshot(path=shots / "overview.png", full_page=True)

    page.goto(f"{web}/dashboard/admin/sites/{site_id}/thresholds")
    page.locator('#threshold-form input[name="advice_hold"]').fill("0.4")
    expect(page.locator("#save-thresholds")).to_be_enabled()
    page.wait_for_timeout(300)
    page.screenshot(path=shots / "thresholds.png", full_page=True)

    page.goto(f"{web}/dashboard/queue")
    page.keyboard.press("?")
    page.screenshot(path=shots / "keys.png")
    assert all(
        (shots / f"{name}.png").stat().st_size > 10_000 for name in ("queue", "comment", "overview", "thresholds")
    )
