"""The moderators' dashboard through Flask's test client, on SQLite and PostgreSQL with real Redis."""

# Rows looked up by id are there (a None fails the test anyway): no narrowing at every lookup.
# mypy: disable-error-code="union-attr, arg-type"

from __future__ import annotations

import hashlib
import html
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer
from prometheus_client import REGISTRY
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from dashboard import CONTENT_SECURITY_POLICY
from dashboard.auth import DEVICE_COOKIE
from models.db import make_session_factory
from models.entities import (
    CallbackDelivery,
    Comment,
    Decision,
    ListEntry,
    ModelVersion,
    ModerationAction,
    Moderator,
    OutboxMessage,
    Site,
    TrainingLabel,
)
from moderation import callbacks
from moderation.accounts import MAX_EMAIL_CHARS, AccountError, create_moderator
from moderation.decisions import TRIES_BEFORE_HOLDING, hold_unclassified
from moderation.intake import NewComment, accept_comment
from moderation.lifecycle import apply_delete
from moderation.lists import add_entry, match_lists
from moderation.review import ConflictError, record_verdict
from moderation.sites import create_site
from server.factory import create_app
from server.settings import Settings
from tests.conftest import TrainedModel
from tests.support.dashboard import (
    PASSWORD,
    act,
    add_moderator,
    callback_row,
    csrf_token,
    dead_callback,
    held_comment,
    sign_in,
)
from tests.support.statements import statements_run

Sessions = sessionmaker[Session]

XSS = (
    '<script>document.title="pwned"</script><img src=x onerror="alert(1)">'
    '<a href="javascript:alert(2)">click</a><svg onload=alert(3)></svg>"></textarea><iframe src="//evil">'
)


@pytest.fixture
def site_row(sessions: Sessions) -> int:
    with sessions.begin() as session:
        site, _secret = create_site(session, "backpain-advisor", "http://127.0.0.1:9/moderation-callback")
        return site.id


@pytest.fixture
def people(sessions: Sessions) -> dict[str, int]:
    with sessions.begin() as session:
        return {
            "mod": add_moderator(session, "mod@example.org"),
            "mod2": add_moderator(session, "mod2@example.org"),
            "admin": add_moderator(session, "admin@example.org", "admin"),
        }


@pytest.fixture
def moderator_client(client: FlaskClient, people: dict[str, int]) -> FlaskClient:
    assert sign_in(client, "mod@example.org").status_code == 302
    return client


@pytest.fixture
def held(sessions: Sessions, site_row: int) -> list[tuple[int, int]]:
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        return [
            held_comment(
                session, site, f"c-{n}", f"Held comment number {n}: take 800mg ibuprofen.", age=timedelta(hours=n)
            )
            for n in range(1, 4)
        ]


def _page(client: FlaskClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


# --- accounts -------------------------------------------------------------------------------------


def test_login_page_and_redirect_when_signed_out(client: FlaskClient) -> None:
    response = client.get("/dashboard/queue")
    assert response.status_code == 302
    assert "/dashboard/login" in response.headers["Location"]
    page = _page(client, "/dashboard/login")
    assert 'name="csrf_token"' in page


def test_the_services_bare_address_leads_to_the_dashboard(client: FlaskClient) -> None:
    """What a person opens first; an unknown path outside the dashboard is still the API's JSON 404."""
    front = client.get("/")
    assert front.status_code == 302 and front.headers["Location"] == "/dashboard/"
    assert client.get("/dashboard/").headers["Location"].startswith("/dashboard/login")
    for path in ("/nothing-here", "/dashboardx", "/webhooks/nothing", "/api/nothing"):
        answer = client.get(path, headers={"Accept": "text/html"})
        assert answer.get_json() == {"error": "not_found", "message": "no such resource"}, path


@pytest.mark.parametrize("path", ["/dashboard/nosuchpage", "/dashboard/comments/abc", "/dashboard/admin/nosuchpage"])
def test_an_address_under_the_dashboard_that_matches_no_page_is_its_html_error_page(
    moderator_client: FlaskClient, path: str
) -> None:
    """A mistyped or stale link a moderator follows; a client asking for JSON still gets the API's answer."""
    page = moderator_client.get(path, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 404 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "No such page or comment." in text and "mod@example.org" in text  # the dashboard's page, signed in
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY

    wanted_json = moderator_client.get(path, headers={"Accept": "application/json"})
    assert wanted_json.status_code == 404
    assert wanted_json.get_json() == {"error": "not_found", "message": "no such resource"}


def test_a_method_an_address_under_the_dashboard_does_not_take_is_its_html_error_page(
    moderator_client: FlaskClient,
) -> None:
    """A form's address opened in the address bar (from the history, say); JSON clients get the API's 405."""
    page = moderator_client.get("/dashboard/bulk", headers={"Accept": "text/html"})
    assert page.status_code == 405 and page.mimetype == "text/html"
    assert sorted(page.headers["Allow"].split(", ")) == ["OPTIONS", "POST"]
    text = page.get_data(as_text=True)
    assert "This address does not take a GET request" in text and "mod@example.org" in text
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "Sign out" in moderator_client.get("/dashboard/queue").get_data(as_text=True)  # still signed in

    wanted_json = moderator_client.get("/dashboard/bulk", headers={"Accept": "application/json"})
    assert wanted_json.status_code == 405 and wanted_json.headers["Allow"] == page.headers["Allow"]
    assert wanted_json.get_json() == {"error": "method_not_allowed", "message": "method not allowed here"}
    webhook = moderator_client.get("/webhooks/comments", headers={"Accept": "text/html"})
    assert webhook.status_code == 405 and webhook.get_json()["error"] == "method_not_allowed"
    assert "POST" in webhook.headers["Allow"].split(", ")


def test_login_wrong_password_refused_and_right_one_works(client: FlaskClient, people: dict[str, int]) -> None:
    assert sign_in(client, "mod@example.org", "wrong password!").status_code == 401
    response = sign_in(client, "MOD@example.org")
    assert response.status_code == 302
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("moderation_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert "Held" in _page(client, "/dashboard/queue")


def test_logout_needs_post_and_ends_the_session(moderator_client: FlaskClient) -> None:
    token = csrf_token(moderator_client, "/dashboard/queue")
    assert moderator_client.post("/dashboard/logout", data={"csrf_token": token}).status_code == 302
    assert moderator_client.get("/dashboard/queue").status_code == 302


def test_deactivated_moderator_cannot_sign_in(client: FlaskClient, sessions: Sessions, people: dict[str, int]) -> None:
    with sessions.begin() as session:
        session.get(Moderator, people["mod"]).is_active = False
    assert sign_in(client, "mod@example.org").status_code == 401


def test_login_is_rate_limited(client: FlaskClient, people: dict[str, int]) -> None:
    answers = [sign_in(client, "mod@example.org", "wrong password!") for _ in range(12)]
    assert [a.status_code for a in answers[:10]] == [401] * 10
    assert answers[-1].status_code == 429
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
    assert 'value="mod@example.org"' in answers[-1].get_data(as_text=True)  # the address typed stays, as after a 401


def test_login_attempts_on_one_account_are_limited_whatever_the_address(
    client: FlaskClient, people: dict[str, int]
) -> None:
    codes = []
    for number in range(11):
        client.environ_base["REMOTE_ADDR"] = f"198.51.100.{number}"  # a new address for every attempt
        codes.append(sign_in(client, "Mod@Example.org ", "wrong password!").status_code)
    assert codes == [401] * 10 + [429]


def _lock_out_by_guessing(app: Flask, email: str) -> list[int]:
    """Someone else fails on ``email`` from a new address each time, until the e-mail's count is full (10 a
    minute, the sign-in that succeeded included); the answers, deduplicated in order."""
    guesser = app.test_client()
    codes = []
    for number in range(11):
        guesser.environ_base["REMOTE_ADDR"] = f"198.51.100.{number}"
        codes.append(sign_in(guesser, email, "wrong password!").status_code)
    return list(dict.fromkeys(codes))


def test_others_failing_on_an_address_do_not_lock_out_a_browser_that_signed_in_with_it_before(
    app: Flask, client: FlaskClient, people: dict[str, int]
) -> None:
    """The per-e-mail count stops password guessing spread over many addresses, but anyone could keep it
    full to keep an admin out; a browser the admin signed in with before is counted by itself."""
    assert sign_in(client, "mod@example.org").status_code == 302
    device = client.get_cookie(DEVICE_COOKIE)
    assert device is not None and device.http_only and device.same_site == "Lax"
    # Signed, not encrypted: what anyone holding it reads confirms no guess of the address.
    _signed, payload = URLSafeTimedSerializer("not the key").loads_unsafe(device.value)
    assert set(payload) == {"account", "device"}
    assert payload["account"] != hashlib.sha256(b"mod@example.org").hexdigest()
    assert "mod@example.org" not in json.dumps(payload)
    client.delete_cookie("moderation_session")  # signed out, or the session expired

    assert _lock_out_by_guessing(app, "mod@example.org") == [401, 429]
    assert sign_in(app.test_client(), "mod@example.org").status_code == 429  # a browser never used: locked out
    assert sign_in(client, "Mod@Example.org ").status_code == 302  # the known one signs in


def test_a_device_cookie_counts_only_for_its_own_account_and_only_as_signed(
    app: Flask, client: FlaskClient, people: dict[str, int]
) -> None:
    assert sign_in(client, "mod2@example.org").status_code == 302  # known for mod2, not for mod
    known = client.get_cookie(DEVICE_COOKIE)
    assert known is not None
    client.delete_cookie("moderation_session")
    assert _lock_out_by_guessing(app, "mod@example.org") == [401, 429]
    assert sign_in(client, "mod@example.org").status_code == 429

    forged = app.test_client()
    forged.set_cookie(DEVICE_COOKIE, known.value[:-2] + ("AA" if not known.value.endswith("AA") else "BB"))
    assert _lock_out_by_guessing(app, "mod2@example.org") == [401, 429]
    assert sign_in(forged, "mod2@example.org").status_code == 429  # a tampered cookie is no cookie
    client.delete_cookie("moderation_session")
    assert sign_in(client, "mod2@example.org").status_code == 302


def _sign_ins_from_clients_behind_one_proxy(app: Flask, attempts: int) -> list[int]:
    """Each attempt from a new client address and for a new e-mail, all through one proxy (127.0.0.1)."""
    client = app.test_client()
    codes = []
    for number in range(attempts):
        client.environ_base["HTTP_X_FORWARDED_FOR"] = f"203.0.113.{number}"
        codes.append(sign_in(client, f"nobody{number}@example.org", "wrong password!").status_code)
    return codes


def test_behind_a_trusted_proxy_the_sign_in_limit_counts_each_client(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"trusted_proxies": 1, "login_rate_limit": "3/minute"}))
    try:
        assert _sign_ins_from_clients_behind_one_proxy(app, 5) == [401] * 5
    finally:
        app.extensions["moderation"].sessions.kw["bind"].dispose()


def test_forwarded_addresses_are_not_believed_without_a_trusted_proxy(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"login_rate_limit": "3/minute"}))
    try:
        assert _sign_ins_from_clients_behind_one_proxy(app, 5) == [401] * 3 + [429] * 2
    finally:
        app.extensions["moderation"].sessions.kw["bind"].dispose()


def _sign_ins_from(app: Flask, addresses: list[str], who: str) -> list[int]:
    """A wrong password from each address in turn, for a new e-mail each time, from a new browser each time."""
    codes = []
    for number, address in enumerate(addresses):
        browser = app.test_client()
        browser.environ_base["REMOTE_ADDR"] = address
        codes.append(sign_in(browser, f"{who}{number}@example.org", "wrong password!").status_code)
    return codes


def test_the_sign_in_limit_per_ip_counts_an_ipv6_subscribers_64_as_one_client(settings: Settings) -> None:
    """One IPv6 subscriber holds a whole /64, as the author checks count it: keyed on the exact address, a
    password sprayed over many accounts from one home line took a fresh address per try and was never limited
    per client (a cold review's test). An IPv4-mapped address is counted as its IPv4 one, not as one /64."""
    app = create_app(settings.model_copy(update={"login_rate_limit": "3/minute"}))
    try:
        one_line = [f"2001:db8:1:2::{n:x}" for n in range(1, 7)]
        assert _sign_ins_from(app, one_line, "a") == [401] * 3 + [429] * 3
        assert _sign_ins_from(app, ["2001:db8:1:3::1"], "b") == [401]  # the next /64 is another subscriber
        assert _sign_ins_from(app, [f"::ffff:198.51.100.{n}" for n in range(1, 5)], "c") == [401] * 4
        assert _sign_ins_from(app, ["198.51.100.9"] * 2 + ["::ffff:198.51.100.9"] * 2, "d") == [401] * 3 + [429]
    finally:
        app.extensions["moderation"].sessions.kw["bind"].dispose()


def test_argon2_hash_is_stored(sessions: Sessions, people: dict[str, int]) -> None:
    with sessions() as session:
        moderator = session.get(Moderator, people["mod"])
        assert moderator.password_hash.startswith("$argon2id$")
        assert PASSWORD not in moderator.password_hash


def test_moderator_refused_admin_pages(moderator_client: FlaskClient, site_row: int) -> None:
    for path in (
        "/dashboard/admin/sites",
        "/dashboard/admin/lists",
        "/dashboard/admin/moderators",
        "/dashboard/admin/callbacks",
        "/dashboard/admin/models",
        f"/dashboard/admin/sites/{site_row}/thresholds",
    ):
        assert moderator_client.get(path).status_code == 403, path
    token = csrf_token(moderator_client, "/dashboard/queue")
    response = moderator_client.post(f"/dashboard/admin/sites/{site_row}/rotate", data={"csrf_token": token})
    assert response.status_code == 403


def test_form_post_without_csrf_token_is_refused(moderator_client: FlaskClient, held: list[tuple[int, int]]) -> None:
    comment_id, decision_id = held[0]
    response = moderator_client.post(
        f"/dashboard/comments/{comment_id}/act", data={"action": "approve", "expected_decision_id": str(decision_id)}
    )
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)


def test_webhook_is_not_subject_to_csrf(client: FlaskClient) -> None:
    response = client.post("/webhooks/comments", json={"type": "comment.created", "data": {"site": "nope"}})
    assert response.status_code == 401  # the signature check answers, not the CSRF check


def test_security_headers(moderator_client: FlaskClient) -> None:
    response = moderator_client.get("/dashboard/queue")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_secure_cookie_flag_when_configured(settings: Settings, people: dict[str, int]) -> None:
    app = create_app(settings.model_copy(update={"session_cookie_secure": True}))
    client = app.test_client()
    response = sign_in(client, "mod@example.org")
    cookies = response.headers.getlist("Set-Cookie")
    for name in ("moderation_session", DEVICE_COOKIE):
        assert "Secure" in next(c for c in cookies if c.startswith(f"{name}=")), name
    app.extensions["moderation"].sessions.kw["bind"].dispose()


# --- queues ---------------------------------------------------------------------------------------


def test_held_queue_oldest_first_with_counts_and_details(
    moderator_client: FlaskClient, held: list[tuple[int, int]]
) -> None:
    page = _page(moderator_client, "/dashboard/queue")
    ids = [int(n) for n in re.findall(r'data-comment-id="(\d+)"', page)]
    assert ids == [held[2][0], held[1][0], held[0][0]]  # c-3 is 3 hours old
    assert 'data-count="held">3<' in page
    assert "Does Massage Therapy Really Help Back Pain?" in page
    assert "jan@example.org" in page and "203.0.113.9" in page
    assert "<mark>ibuprofen</mark>" in page
    assert '<span class="reason">Medical advice</span>' in page  # the reason, by its label
    assert "in the last day" in page


def test_a_comment_opened_from_a_queue_page_links_back_to_that_page_at_that_comment(
    moderator_client: FlaskClient, held: list[tuple[int, int]]
) -> None:
    queue = "/dashboard/queue?queue=held&sort=risk&page=1"
    page = html.unescape(_page(moderator_client, queue))
    opened = re.search(rf'class="open" href="(/dashboard/comments/{held[1][0]}[^"]*)"', page)
    assert opened is not None
    comment_page = html.unescape(_page(moderator_client, opened.group(1)))
    assert f'href="{queue}#c{held[1][0]}" id="back-to-queue"' in comment_page
    # Its reject form comes back to the comment page as it was opened, which keeps the way back.
    assert f'name="back" value="{opened.group(1)}"' in comment_page


@pytest.mark.parametrize(
    "given", ["//evil.example/dashboard/queue", "https://evil.example/dashboard/queue", "/dashboard/admin/sites", ""]
)
def test_a_comment_page_links_only_back_to_a_queue_page_of_this_site(
    moderator_client: FlaskClient, held: list[tuple[int, int]], given: str
) -> None:
    comment_page = _page(moderator_client, f"/dashboard/comments/{held[0][0]}?queue={quote(given, safe='')}")
    assert f'href="/dashboard/queue#c{held[0][0]}" id="back-to-queue"' in comment_page


def test_a_same_text_link_keeps_the_way_back_to_the_queue_page_it_was_opened_from(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """The "Same text" links opened a comment whose "← Queue" went to the plain held queue: a moderator who
    followed one from a filtered page of the queue, or from a comment opened from it, lost that page."""
    body = "Visit my great shop for cheap back braces today!"
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        first, _ = held_comment(session, site, "dup-1", body)
        second, _ = held_comment(session, site, "dup-2", body)
    queue = "/dashboard/queue?queue=held&sort=newest&text=shop"

    def link(page: str, card: int, to: int, kind: str) -> str:
        """The href of the link to comment ``to`` in ``card``'s ``open`` link or ``same-text`` line."""
        shown = html.unescape(page.split(f'id="c{card}"', 1)[1].split("</article>", 1)[0])
        found = re.search(rf'<a class="open" href="([^"]*)">#{to}<', shown)
        if kind == "same-text":
            found = re.search(rf'href="([^"]*)">#{to} ', shown.split('class="same-text"', 1)[1].split("</p>", 1)[0])
        assert found is not None, (kind, shown)
        return found.group(1)

    queue_page = _page(moderator_client, queue)
    opened = link(queue_page, second, second, "open")
    same_text = link(queue_page, second, first, "same-text")
    assert same_text.startswith(f"/dashboard/comments/{first}?")
    assert parse_qs(urlsplit(same_text).query) == parse_qs(urlsplit(opened).query) == {"queue": [queue]}
    comment_page = html.unescape(_page(moderator_client, same_text))
    assert f'href="{queue}#c{first}" id="back-to-queue"' in comment_page
    # From that comment's page, the next "Same text" link carries the page's own way back on.
    onward = link(comment_page, first, second, "same-text")
    assert parse_qs(urlsplit(onward).query) == {"queue": [queue]}
    assert f'href="{queue}#c{second}" id="back-to-queue"' in html.unescape(_page(moderator_client, onward))
    # A comment page opened with no queue page, or with one that is not the queue's, passes none on.
    for given in ("", "?queue=" + quote("https://evil.example/dashboard/queue", safe="")):
        plain = html.unescape(_page(moderator_client, f"/dashboard/comments/{first}{given}"))
        assert link(plain, first, second, "same-text") == f"/dashboard/comments/{second}"


def test_characters_drawn_as_nothing_are_shown_by_name_in_the_comment(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """Held as hidden_characters, the text looked like any other: the moderator now sees where they are. An
    emoji's own joiners stay as they are, and the markers are the only markup added to the escaped text."""
    body = "Buy v\u200biagra\u00ad now <b>cheap</b> 👨\u200d👩\u200d👧 \u202eevil"
    with sessions.begin() as session:
        held, _ = held_comment(session, session.get(Site, site_row), "c-1", body, reasons=["hidden_characters"])
    for page in (_page(moderator_client, "/dashboard/queue"), _page(moderator_client, f"/dashboard/comments/{held}")):
        shown = page.split('class="comment-body" dir="auto"', 1)[1].split("</p>", 1)[0]
        marker = '<span class="hidden-char" title="invisible character U+{0}">U+{0}</span>'
        assert f"v{marker.format('200B')}iagra{marker.format('00AD')} now" in shown
        assert "&lt;b&gt;cheap&lt;/b&gt;" in shown and "👨\u200d👩\u200d👧" in shown
        assert f"{marker.format('202E')}evil" in shown and "\u202e" not in shown
        assert "Hidden characters" in page


def test_risk_order_and_filters(moderator_client: FlaskClient, sessions: Sessions, site_row: int) -> None:
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        low, _ = held_comment(session, site, "low", "Massage helped me.", advice=0.55, author_name="Ann")
        high, _ = held_comment(
            session,
            site,
            "high",
            "Buy pills at pharma.example",
            spam=0.8,
            advice=0.1,
            reasons=["possible_spam"],
            author_name="Bot",
            author_email="bot@spam.example",
        )
    page = _page(moderator_client, "/dashboard/queue?sort=risk")
    assert page.index(f'data-comment-id="{high}"') < page.index(f'data-comment-id="{low}"')
    assert f'data-comment-id="{low}"' not in _page(moderator_client, "/dashboard/queue?text=pills")
    assert f'data-comment-id="{high}"' in _page(moderator_client, "/dashboard/queue?author=spam.example")
    assert f'data-comment-id="{high}"' not in _page(moderator_client, "/dashboard/queue?reason=medical_advice")
    assert f'data-comment-id="{low}"' in _page(moderator_client, "/dashboard/queue?score=medical_advice&score_min=0.5")
    assert f'data-comment-id="{high}"' not in _page(
        moderator_client, "/dashboard/queue?score=medical_advice&score_min=0.5"
    )
    with sessions() as session:  # the day it was received, which is not today in a run just after midnight
        received = session.get_one(Comment, low).received_at.date().isoformat()
    assert f'data-comment-id="{low}"' in _page(
        moderator_client, f"/dashboard/queue?date_from={received}&site=backpain-advisor"
    )
    assert f'data-comment-id="{low}"' not in _page(moderator_client, "/dashboard/queue?article=nothing-like-it")


def test_same_text_and_author_history(moderator_client: FlaskClient, sessions: Sessions, site_row: int) -> None:
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        first, _ = held_comment(session, site, "dup-1", "Visit my great shop for cheap back braces today!")
        second, _ = held_comment(session, site, "dup-2", "Visit my great shop for cheap back braces today!")
        session.get(Comment, first).status = "rejected"
    page = _page(moderator_client, f"/dashboard/comments/{second}")
    assert f"#{first} (rejected)" in page
    assert re.search(r"<strong>1</strong> rejected", page)


def test_a_comment_shows_what_the_policy_counted_when_it_decided_beside_the_counts_now(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """A duplicate or flood hold is explained by the counts of its moment; the context below is counted now."""
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        held, decision_id = held_comment(session, site, "flood", "Buy now, buy now, buy now.", reasons=["author_flood"])
        session.get_one(Decision, decision_id).signals = {
            "duplicates_elsewhere": 3,
            "author_posts_last_hour": 12,
            "author_approved_before": 0,
            "author_rejected_before": 4,
            "author_allowed": False,
        }
        plain, _ = held_comment(session, site, "old", "Decided before decisions kept their signals.")
    page = _page(moderator_client, f"/dashboard/comments/{held}")
    when_decided = re.sub(r"\s+", " ", page.split('class="when-decided"', 1)[1].split("</p>", 1)[0])
    assert "<strong>3</strong> same text on this site in the day before" in when_decided
    assert "<strong>12</strong> by this author in the hour before" in when_decided
    assert "<strong>0</strong> approved and <strong>4</strong> rejected before" in when_decided
    assert "allow list" not in when_decided
    assert re.search(r"<strong>0</strong> rejected ·", page)  # the context, counted now, has none of them
    assert 'class="when-decided"' not in _page(moderator_client, f"/dashboard/comments/{plain}")


def test_author_history_counts_a_shared_ip_only_near_the_comment(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """As the policy does: the same e-mail counts for good, someone else on the same IP only within a day."""
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        shared = {"author_ip": "198.51.100.7"}
        old, _ = held_comment(
            session, site, "ip-old", "Old one.", age=timedelta(days=3), author_email="a@x.org", **shared
        )
        near, _ = held_comment(
            session, site, "ip-near", "Near one.", age=timedelta(hours=2), author_email="b@x.org", **shared
        )
        mine, _ = held_comment(session, site, "mail-old", "Mine.", age=timedelta(days=30), author_email="c@x.org")
        target, _ = held_comment(session, site, "target", "This one.", author_email="c@x.org", **shared)
        for rejected in (old, near, mine):
            session.get(Comment, rejected).status = "rejected"
    page = _page(moderator_client, f"/dashboard/comments/{target}")
    assert re.search(r"<strong>2</strong> rejected", page)  # near (same IP, hours ago) and mine (same e-mail)


def test_author_history_counts_an_ipv6_authors_other_addresses_in_the_same_64(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        earlier = {"age": timedelta(hours=2)}
        before, _ = held_comment(
            session, site, "v6-before", "Before.", author_email="a@x.org", author_ip="2001:db8::1", **earlier
        )
        other_64, _ = held_comment(
            session, site, "v6-other", "Other.", author_email="b@x.org", author_ip="2001:db8:0:1::1", **earlier
        )
        target, _ = held_comment(
            session, site, "v6-target", "This one.", author_email="c@x.org", author_ip="2001:db8::abcd:2"
        )
        for rejected in (before, other_64):
            session.get(Comment, rejected).status = "rejected"
    page = _page(moderator_client, f"/dashboard/comments/{target}")
    assert re.search(r"<strong>1</strong> rejected", page)


def test_the_author_filter_finds_an_ipv6_author_by_their_64_as_the_history_counts_them(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """A comment's history counts an IPv6 author's other addresses in the /64, but the filter matched the address
    exactly: filtering by the address on the card found none of the comments that history counted."""
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        first, _ = held_comment(session, site, "v6-a", "One.", author_ip="2001:db8::1")
        same_64, _ = held_comment(session, site, "v6-b", "Two.", author_ip="2001:db8::abcd:2")
        held_comment(session, site, "v6-c", "Three.", author_ip="2001:db8:0:1::1")  # the next /64: someone else
        ipv4, _ = held_comment(session, site, "v4-a", "Four.", author_ip="198.51.100.7")
        held_comment(session, site, "v4-b", "Five.", author_ip="198.51.100.8")  # an IPv4 address counts alone
    assert _ids_on(moderator_client, "/dashboard/queue?author=2001:db8::abcd:2") == {first, same_64}
    assert _ids_on(moderator_client, "/dashboard/queue?author=2001:DB8:0:0:0:0:0:1") == {first, same_64}
    assert _ids_on(moderator_client, "/dashboard/queue?author=198.51.100.7") == {ipv4}
    assert _ids_on(moderator_client, "/dashboard/queue?author=::ffff:198.51.100.7") == {ipv4}  # stored as IPv4
    author_field = re.search(r'<input type="search" name="author"[^>]*>', _page(moderator_client, "/dashboard/queue"))
    assert author_field is not None and "/64" in html.unescape(author_field.group(0))


def test_the_queue_filters_comments_held_for_an_unfamiliar_language(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """So a moderator can hand the Russian comments to a colleague who reads Russian."""
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        russian, _ = held_comment(
            session, site, "ru", "Спасибо за статью, массаж мне очень помог.", reasons=["unfamiliar_language"]
        )
        english, _ = held_comment(session, site, "en", "Take 800mg ibuprofen every 6 hours.")
    page = _page(moderator_client, "/dashboard/queue?reason=unfamiliar_language")
    assert f'data-comment-id="{russian}"' in page and f'data-comment-id="{english}"' not in page
    assert '<option value="unfamiliar_language" selected' in page


def test_a_comment_held_unclassified_shows_its_reason_and_no_scores(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """Its classification failed run after run: the moderator reads it with nothing from the model."""
    with sessions.begin() as session:
        site = session.get_one(Site, site_row)
        new = NewComment(external_id="c-1", article_id="massage-therapy", body="Stretching helped me.")
        comment_id = accept_comment(session, site, "wh-1", new, datetime.now(UTC)).comment_id
        session.execute(update(OutboxMessage).values(tries=TRIES_BEFORE_HOLDING + 1))
        assert hold_unclassified(session, comment_id, "v-1", datetime.now(UTC)) is not None
        other, _ = held_comment(session, site, "c-2")
    page = _page(moderator_client, "/dashboard/queue?reason=not_classified")
    assert f'data-comment-id="{comment_id}"' in page and f'data-comment-id="{other}"' not in page
    card = page[page.index(f'id="c{comment_id}"') :]
    assert '<span class="reason">Not classified</span>' in card
    assert "<meter" not in card[: card.index('class="reasons"')]  # no bar stands for a score never made
    assert card.count('<span class="score-value">–</span>') >= 2


def test_comment_body_is_escaped(moderator_client: FlaskClient, sessions: Sessions, site_row: int) -> None:
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        comment_id, _ = held_comment(session, site, "xss", XSS, author_name=XSS, author_url="javascript:alert(4)")
    for path in ("/dashboard/queue", f"/dashboard/comments/{comment_id}"):
        page = _page(moderator_client, path)
        assert "<script>document.title" not in page
        assert "<img src=x" not in page and "<svg onload" not in page and "<iframe" not in page
        assert 'href="javascript:' not in page
        assert html.escape(XSS, quote=False)[:40] in page.replace("&#34;", '"').replace("&#39;", "'")


# --- replies: what a comment answers ------------------------------------------------------------


def _in_reply_to(page: str, comment_id: int) -> str | None:
    """The "In reply to" line of this comment's card (its markup), or None when the card has none."""
    card = re.search(rf'<article[^>]*data-comment-id="{comment_id}".*?</article>', page, re.S)
    assert card, f"no card for {comment_id}"
    line = re.search(r'<p class="in-reply-to">(.*?)</p>', card.group(0), re.S)
    return line.group(1) if line else None


def _links_to(line: str, comment_id: int) -> bool:
    """Whether an "In reply to" line links to that comment's page (with the queue page it came from, if any)."""
    return re.search(rf'<a href="/dashboard/comments/{comment_id}(\?queue=[^"]*)?">#{comment_id}</a>', line) is not None


PARENT_TEXT = '<script>document.title="pwned"</script> Kev, ibuprofen is fine at 400mg. ' + "More on doses. " * 12


@pytest.mark.parametrize("parent_status", ["approved", "deleted"])
def test_a_reply_shows_the_start_of_the_comment_it_answers_escaped_with_its_status_and_a_link(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int, parent_status: str
) -> None:
    """A moderator judging "@Kev don't do that, take 800mg instead" needs what Kev said; a parent the site
    deleted since is shown all the same, with its status."""
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        parent, _ = held_comment(session, site, "c-kev", PARENT_TEXT)
        session.get(Comment, parent).status = parent_status
        reply, _ = held_comment(session, site, "c-reply", "@Kev don't do that, take 800mg instead", parent_id="c-kev")
    for path in ("/dashboard/queue", f"/dashboard/comments/{reply}"):
        page = _page(moderator_client, path)
        line = _in_reply_to(page, reply)
        assert line is not None, path
        assert _links_to(line, parent)
        assert f'<span class="badge {parent_status}">{parent_status}</span>' in line
        assert "<script>document.title" not in page and "&lt;script&gt;document.title=" in line
        excerpt = re.search(r'<q class="parent-body">(.*?)</q>', line, re.S)
        assert excerpt, line
        shown = html.unescape(excerpt.group(1))
        assert shown.endswith("…") and PARENT_TEXT.startswith(shown[:-1]) and 100 <= len(shown) <= 120, shown


def test_a_reply_whose_parent_never_arrived_shows_the_sites_id_escaped(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        reply, _ = held_comment(session, site, "c-reply", "Agreed!", parent_id='<b>c-0</b>&"x"')
        plain, _ = held_comment(session, site, "c-plain", "Not a reply.")
    for path in ("/dashboard/queue", f"/dashboard/comments/{reply}"):
        page = _page(moderator_client, path)
        line = _in_reply_to(page, reply)
        assert line is not None and "<b>" not in page
        shown = " ".join(line.split())
        assert html.unescape(shown) == 'In reply to <span class="parent-id"><b>c-0</b>&"x"</span> (not received)'
        assert '<span class="parent-id">&lt;b&gt;c-0&lt;/b&gt;&amp;' in line and "<a " not in line
    assert _in_reply_to(_page(moderator_client, "/dashboard/queue"), plain) is None


def test_an_in_reply_to_link_keeps_the_way_back_to_the_queue_page_it_was_opened_from(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """The "In reply to" link opened the parent with a "← Queue" to the plain held queue: a moderator who
    followed it from a filtered page of the queue, or from a reply opened from it, lost that page."""
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        parent, _ = held_comment(session, site, "c-kev", "Ibuprofen is fine at 400mg, Kev.")
        reply, _ = held_comment(session, site, "c-reply", "@Kev don't, take 800mg instead", parent_id="c-kev")
    queue = "/dashboard/queue?queue=held&sort=newest&text=800mg"

    def parent_link(page: str) -> str:
        found = re.search(rf'<a href="([^"]*)">#{parent}</a>', _in_reply_to(page, reply) or "")
        assert found is not None, _in_reply_to(page, reply)
        return html.unescape(found.group(1))

    from_queue = parent_link(_page(moderator_client, queue))
    assert from_queue.startswith(f"/dashboard/comments/{parent}?")
    assert parse_qs(urlsplit(from_queue).query) == {"queue": [queue]}
    assert f'href="{queue}#c{parent}" id="back-to-queue"' in html.unescape(_page(moderator_client, from_queue))
    # On the reply's own page, the link carries on the queue page that page was opened from.
    reply_page = _page(moderator_client, f"/dashboard/comments/{reply}?queue={quote(queue, safe='')}")
    assert parse_qs(urlsplit(parent_link(reply_page)).query) == {"queue": [queue]}
    # A reply's page opened with no queue page, or with one that is not the queue's, passes none on.
    for given in ("", "?queue=" + quote("https://evil.example/dashboard/queue", safe="")):
        assert parent_link(_page(moderator_client, f"/dashboard/comments/{reply}{given}")) == (
            f"/dashboard/comments/{parent}"
        )


def test_a_comment_of_another_site_with_the_parents_id_is_not_the_parent(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """Comment ids are the sites' own: "c-0" on one site is not "c-0" on another."""
    with sessions.begin() as session:
        here = session.get(Site, site_row)
        there, _secret = create_site(session, "other-site", "http://127.0.0.1:9/other-callback")
        theirs, _ = held_comment(session, there, "c-0", "Their c-0.")
        session.get(Comment, theirs).status = "approved"
        reply_here, _ = held_comment(session, here, "c-1", "Replying here.", parent_id="c-0")
        reply_there, _ = held_comment(session, there, "c-1", "Replying there.", parent_id="c-0")
    for path in ("/dashboard/queue", f"/dashboard/comments/{reply_here}"):
        line = _in_reply_to(_page(moderator_client, path), reply_here)
        assert line is not None and line.endswith("(not received)") and f"/dashboard/comments/{theirs}" not in line
    line = _in_reply_to(_page(moderator_client, "/dashboard/queue"), reply_there)
    assert line is not None and _links_to(line, theirs)


def _queue_statements(app: Flask, client: FlaskClient) -> int:
    with statements_run(app.extensions["moderation"].sessions.kw["bind"]) as statements:
        _page(client, "/dashboard/queue")
    return len(statements)


def test_the_parents_of_a_queue_page_cost_one_query(
    app: Flask, moderator_client: FlaskClient, sessions: Sessions, site_row: int, held: list[tuple[int, int]]
) -> None:
    """However many replies a page shows, not one query per card."""
    _page(moderator_client, "/dashboard/queue")  # anything read once per process is read by now
    without_replies = _queue_statements(app, moderator_client)
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        parents = [held_comment(session, site, f"p-{n}", f"Parent {n}.")[0] for n in (1, 2)]
        for parent in parents:
            session.get(Comment, parent).status = "approved"  # out of the held queue: the cards stay the same
        for (reply, _), parent_id in zip(held, ["p-1", "p-2", "never-arrived"], strict=True):
            session.get(Comment, reply).parent_id = parent_id
    assert _queue_statements(app, moderator_client) == without_replies + 1
    page = _page(moderator_client, "/dashboard/queue")
    assert [_in_reply_to(page, reply) is not None for reply, _ in held] == [True, True, True]
    assert _links_to(_in_reply_to(page, held[1][0]) or "", parents[1])


# --- actions --------------------------------------------------------------------------------------


def test_approve_records_decision_audit_callback_and_label(
    moderator_client: FlaskClient,
    sessions: Sessions,
    held: list[tuple[int, int]],
    people: dict[str, int],
) -> None:
    comment_id, decision_id = held[0]
    response = act(moderator_client, comment_id, "approve", decision_id)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "approved"
    with sessions() as session:
        current = session.scalar(select(Decision).where(Decision.comment_id == comment_id, Decision.is_current))
        assert current.outcome == "approve" and current.decided_by == "moderator:mod@example.org"
        assert current.advice_score == pytest.approx(0.93) and current.model_version == "test-model"
        assert session.get(Comment, comment_id).status == "approved"
        audit = session.scalars(select(ModerationAction).where(ModerationAction.comment_id == comment_id)).all()
        assert [(a.action, a.before_status, a.after_status, a.moderator_id) for a in audit] == [
            ("approve", "held", "approved", people["mod"])
        ]
        assert audit[0].before_decision_id == decision_id and audit[0].after_decision_id == current.id
        delivery = session.scalar(select(CallbackDelivery).where(CallbackDelivery.decision_id == current.id))
        assert delivery.event == "comment.reviewed"
        assert delivery.payload["data"]["status"] == "approved"
        assert delivery.payload["data"]["decided_by"] == "moderator"
        label = session.scalar(select(TrainingLabel).where(TrainingLabel.comment_id == comment_id))
        assert (label.spam, label.medical_advice, label.source) == (False, False, "moderator")
    page = _page(moderator_client, f"/dashboard/comments/{comment_id}")
    assert "mod@example.org" in page and "audit-row" in page


def test_a_verdict_withdraws_the_models_callbacks_the_site_has_not_received(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int, held: list[tuple[int, int]]
) -> None:
    """Else the model's "held", still being retried, would reach the site after the verdict and undo it there."""
    with sessions.begin() as session:
        rows = {}
        for name, (comment, decision), status in (
            ("retrying", held[0], "pending"),  # failed once, due again later
            ("dead", held[1], "dead"),
            ("elsewhere", held[2], "pending"),
        ):
            rows[name] = dead_callback(session, site_row, comment, decision)
            row = session.get(CallbackDelivery, rows[name])
            row.status, row.message_id = status, f"msg_verdict_{name}"
            session.flush()

    for comment_id, decision_id in held[:2]:
        response = act(moderator_client, comment_id, "reject", decision_id, reason="medical_advice")
        assert response.status_code == 200, response.get_json()

    with sessions() as session:
        statuses = {d.id: (d.event, d.status) for d in session.scalars(select(CallbackDelivery))}
    assert statuses.pop(rows["retrying"]) == ("comment.decided", "cancelled")
    assert statuses.pop(rows["dead"]) == ("comment.decided", "cancelled")
    assert statuses.pop(rows["elsewhere"]) == ("comment.decided", "pending")  # a comment no one judged yet
    assert sorted(statuses.values()) == [("comment.reviewed", "pending")] * 2


@pytest.mark.parametrize(
    ("reason", "spam", "advice"), [("spam", True, None), ("medical_advice", None, True), ("abuse", None, None)]
)
def test_reject_reasons_become_labels(
    moderator_client: FlaskClient,
    sessions: Sessions,
    held: list[tuple[int, int]],
    reason: str,
    spam: bool | None,
    advice: bool | None,
) -> None:
    comment_id, decision_id = held[0]
    assert act(moderator_client, comment_id, "reject", decision_id, reason=reason).status_code == 200
    with sessions() as session:
        label = session.scalar(select(TrainingLabel).where(TrainingLabel.comment_id == comment_id))
        if reason == "abuse":
            assert label is None
        else:
            assert (label.spam, label.medical_advice) == (spam, advice)
        current = session.scalar(select(Decision).where(Decision.comment_id == comment_id, Decision.is_current))
        assert current.reasons == [reason]


def test_reject_needs_a_reason_and_other_needs_a_note(
    moderator_client: FlaskClient, held: list[tuple[int, int]]
) -> None:
    comment_id, decision_id = held[0]
    assert act(moderator_client, comment_id, "reject", decision_id).status_code == 400
    assert act(moderator_client, comment_id, "reject", decision_id, reason="other").status_code == 400
    response = act(moderator_client, comment_id, "reject", decision_id, reason="other", note="dating site bait")
    assert response.status_code == 200


def test_an_action_answers_the_tab_counts_of_the_queue_page_it_was_sent_from(
    moderator_client: FlaskClient, held: list[tuple[int, int]]
) -> None:
    """The page added one to the tab of the comment's new status, which a filter may not match: under "Medical
    advice" the approved tab grew, though the moderator's approval has no model reason and the tab, reloaded,
    did not count it."""
    queue = "/dashboard/queue?queue=all&reason=medical_advice"
    comment_id, decision_id = held[0]
    answer = act(moderator_client, comment_id, "approve", decision_id, back=queue).get_json()
    page = _page(moderator_client, queue)
    shown = dict(re.findall(r'data-count="(\w+)">(\d+)<', page))
    assert answer["counts"] == {name: int(count) for name, count in shown.items()}
    assert (answer["counts"]["held"], answer["counts"]["approved"]) == (2, 0)
    # Nor does the "all" tab list it under this filter any more, which the page cannot tell by itself.
    assert answer["listed"] is False and f'data-comment-id="{comment_id}"' not in page
    comment_id, decision_id = held[1]
    answer = act(moderator_client, comment_id, "reject", decision_id, reason="medical_advice", back=queue)
    assert answer.get_json()["listed"] is True
    comment_id, decision_id = held[2]
    for page_without_filters in (f"/dashboard/comments/{comment_id}", "/dashboard/queue?queue=held", "//["):
        answer = act(moderator_client, comment_id, "approve", decision_id, back=page_without_filters)
        assert answer.status_code in (200, 409) and "counts" not in answer.get_json()  # adding one is exact there


def test_a_comment_page_opened_with_a_queue_that_is_no_url_links_to_the_held_queue(
    moderator_client: FlaskClient, held: list[tuple[int, int]]
) -> None:
    comment_page = _page(moderator_client, f"/dashboard/comments/{held[0][0]}?queue={quote('//[', safe='')}")
    assert f'href="/dashboard/queue#c{held[0][0]}" id="back-to-queue"' in comment_page


def test_the_words_that_drove_a_score_are_shown_under_its_name_and_only_for_a_score_that_counted(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """A new user saw spam words beside a 0.00 spam score, and which word belonged to which score was told only
    in a tooltip."""
    explanation = {
        "spam": [{"feature": "pillz", "weight": 1.5}],
        "medical_advice": [{"feature": "ibuprofen", "weight": 2.0}, {"feature": "name: jan", "weight": 0.3}],
    }
    with sessions.begin() as session:
        site = session.get_one(Site, site_row)
        ids = {}
        for name, spam in (("quiet", 0.001), ("loud", 0.97)):
            text = "Try the pillz, or ibuprofen every 6 hours."
            comment_id, decision_id = held_comment(session, site, f"c-{name}", text, spam=spam, advice=0.93)
            session.get_one(Decision, decision_id).explanation = explanation
            ids[name] = comment_id

    def driver_groups(comment_id: int) -> dict[str, list[str]]:
        page = _page(moderator_client, f"/dashboard/comments/{comment_id}")
        groups = re.findall(
            r'<span class="driver-label">([^<]*):</span>(.*?)</span>\s*(?=<span class="driver-group"|</p>)', page, re.S
        )
        return {label: re.findall(r'<span class="driver [^"]*"[^>]*>([^<]*)</span>', chips) for label, chips in groups}

    assert driver_groups(ids["quiet"]) == {"Medical advice": ["ibuprofen", "name: jan"]}
    assert driver_groups(ids["loud"]) == {"Spam": ["pillz"], "Medical advice": ["ibuprofen", "name: jan"]}
    # the text marks the words of the scores shown, and no others (a marked word with no chip said nothing)
    marked = {
        name: re.findall(r"<mark>([^<]*)</mark>", _page(moderator_client, f"/dashboard/comments/{comment_id}"))
        for name, comment_id in ids.items()
    }
    assert marked == {"quiet": ["ibuprofen"], "loud": ["pillz", "ibuprofen"]}


def test_second_moderator_is_told_and_nothing_is_overwritten(
    app: Flask,
    moderator_client: FlaskClient,
    sessions: Sessions,
    held: list[tuple[int, int]],
) -> None:
    comment_id, decision_id = held[0]
    other = app.test_client()
    sign_in(other, "mod2@example.org")
    assert act(moderator_client, comment_id, "approve", decision_id).status_code == 200
    late = act(other, comment_id, "reject", decision_id, reason="spam")
    assert late.status_code == 409
    assert "mod@example.org" in late.get_json()["message"]
    with sessions() as session:
        current = session.scalars(select(Decision).where(Decision.comment_id == comment_id, Decision.is_current)).all()
        assert [d.outcome for d in current] == ["approve"]
        assert session.get(Comment, comment_id).status == "approved"
        assert len(session.scalars(select(ModerationAction)).all()) == 1


def test_race_between_two_sessions_has_one_winner(
    sessions: Sessions, held: list[tuple[int, int]], people: dict[str, int]
) -> None:
    """Both load the same decision; the compare-and-swap (and the unique index) lets exactly one win."""
    comment_id, decision_id = held[0]
    now = datetime.now(UTC)
    first: Session = sessions()
    record_verdict(first, comment_id, first.get(Moderator, people["mod"]), "approve", None, None, decision_id, now)
    first.commit()
    first.close()
    with sessions() as second, pytest.raises(ConflictError) as raised:
        record_verdict(
            second, comment_id, second.get(Moderator, people["mod2"]), "reject", "spam", None, decision_id, now
        )
    assert raised.value.actor == "mod@example.org"


def _approve_in_a_thread(app: Flask, comment_id: int, decision_id: int) -> tuple[threading.Thread, dict[str, object]]:
    """A moderator's approval sent from another thread (a second web process); its answer's status lands in the
    dict (500 for an exception, what a browser would see)."""
    moderator = app.test_client()
    assert sign_in(moderator, "mod@example.org").status_code == 302
    token = csrf_token(moderator, "/dashboard/queue")
    outcome: dict[str, object] = {}

    def approve() -> None:
        try:
            answer = moderator.post(
                f"/dashboard/comments/{comment_id}/act",
                data={"csrf_token": token, "action": "approve", "expected_decision_id": str(decision_id)},
                headers={"Accept": "application/json"},
            )
            outcome["status"] = answer.status_code
        except Exception as error:  # TESTING: what a browser sees as a 500
            outcome["status"], outcome["error"] = 500, repr(error)[:200]

    return threading.Thread(target=approve), outcome


def _callback_of_the_hold(sessions: Sessions, site_row: int, status: str = "pending") -> tuple[int, int, int]:
    """A held comment whose model callback the site has not taken yet (a slow endpoint): comment, decision and
    callback ids."""
    with sessions.begin() as session:
        comment_id, decision_id = held_comment(session, session.get_one(Site, site_row), "c-1")
        return comment_id, decision_id, callback_row(session, site_row, comment_id, decision_id, status, "msg_hold")


def test_a_verdict_while_an_admin_pauses_the_sites_callbacks_is_not_lost_to_a_deadlock(
    caplog: pytest.LogCaptureFixture,
    app: Flask,
    database_url: str,
    sessions: Sessions,
    site_row: int,
    people: dict[str, int],
) -> None:
    """Lock order. A verdict locked the comment's unsent callbacks (cancel_callbacks) and then needed a KEY SHARE
    lock on the sites row (the foreign key of the callback it inserts); the Sites page's Pause (and Resume, Save
    URL, Rotate, Replay) takes the sites row FOR UPDATE and then updates that site's waiting callbacks. At the
    same moment PostgreSQL found a deadlock and aborted the verdict: a 503 "database unavailable" for the
    moderator, and the verdict lost. Now the verdict locks the sites row first, and one waits for the other.

    The pause's own statements are run here step by step (admin.site_pause: Site FOR UPDATE, then
    callbacks.pause_callbacks) so that the interleaving is certain rather than left to chance."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has no row locks")
    comment_id, decision_id, hold_callback = _callback_of_the_hold(sessions, site_row)
    verdict, outcome = _approve_in_a_thread(app, comment_id, decision_id)
    admin = sessions()
    try:
        site = admin.get_one(Site, site_row, with_for_update=True)  # site_pause's first statement
        verdict.start()
        time.sleep(0.5)  # the verdict waits, for the sites row or (before) for the row of the hold's callback
        held_back = callbacks.pause_callbacks(admin, site, datetime.now(UTC), by="admin@example.org")
        admin.commit()
        verdict.join(30)
    finally:
        admin.close()
    deadlock = [r.getMessage() for r in caplog.records if "deadlock" in r.getMessage().lower()]
    assert outcome.get("status") == 200, (outcome, deadlock)
    assert held_back == 1  # the hold's callback, held back by the pause before the verdict withdrew it
    with sessions() as session:
        assert session.get_one(Comment, comment_id).status == "approved"
        statuses = {row.id: row.status for row in session.execute(select(CallbackDelivery.id, CallbackDelivery.status))}
        assert statuses.pop(hold_callback) == "cancelled"
        assert list(statuses.values()) == ["disabled"]  # the verdict's, held back while the site is paused


def _a_410_recorded_while_a_verdict_waits(sessions: Sessions, verdict: threading.Thread, sent: int) -> object:
    """Callback ``sent`` claimed by a worker, which then holds its row (record_attempts' first lock) while the
    moderator's ``verdict`` starts and waits for it, and records the site's 410 for it; what it recorded."""
    now = datetime.now(UTC)
    with sessions.begin() as session:
        claimed = callbacks.claim_delivery(session, sent, now, callbacks.RetryPolicy())
        assert claimed is not None
        gone = callbacks.AttemptOutcome(sent, 410, False, "Gone", url=claimed.site.callback_url)
        lease = claimed.lease_until
    worker = sessions()
    try:
        callbacks.locked_deliveries(worker, [sent])
        verdict.start()
        time.sleep(0.5)  # the verdict waits for the row of the callback on the wire
        recorded = callbacks.record_attempts(worker, [gone], now, callbacks.RetryPolicy(), lease=lease)
        worker.commit()
        verdict.join(30)
    finally:
        worker.close()
    return recorded


def test_a_verdict_while_a_worker_records_a_410_for_the_comments_callback_is_not_lost_to_a_deadlock(
    app: Flask, database_url: str, sessions: Sessions, site_row: int, people: dict[str, int]
) -> None:
    """The other way round: a worker holds the comment's callback it sent (record_attempts locks it first) and
    the site answered 410, which turns the site's callbacks off. The verdict, holding the sites row now, waits
    for the callback's row; the worker's lock on the sites row must not wait for the verdict's."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has no row locks")
    comment_id, decision_id, hold_callback = _callback_of_the_hold(sessions, site_row)
    verdict, outcome = _approve_in_a_thread(app, comment_id, decision_id)
    assert _a_410_recorded_while_a_verdict_waits(sessions, verdict, hold_callback) == {hold_callback: "disabled"}
    assert outcome.get("status") == 200, outcome
    with sessions() as session:
        assert session.get_one(Comment, comment_id).status == "approved"
        assert session.get_one(Site, site_row).callback_disabled_at is not None
        statuses = {row.id: row.status for row in session.execute(select(CallbackDelivery.id, CallbackDelivery.status))}
        assert statuses.pop(hold_callback) == "cancelled"
        assert list(statuses.values()) == ["disabled"]


def test_a_verdict_while_a_worker_records_a_410_with_another_callback_of_the_comment_waiting_is_not_a_deadlock(
    app: Flask, database_url: str, sessions: Sessions, site_row: int, people: dict[str, int]
) -> None:
    """The comment has two callbacks the site has not taken: one waiting (its retry not due yet) and one on the
    wire, answered 410. The verdict cancels both, locking the waiting one and then waiting for the one on the
    wire; the worker, holding that one, held back every waiting callback of the site and so waited for the
    verdict's. PostgreSQL found a deadlock and aborted one of them. The worker now leaves a callback someone
    holds: it stays pending, and the verdict cancels it. (A comment seldom has two: a new decision withdraws
    the earlier ones' callbacks. The state is made here directly.)"""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has no row locks")
    comment_id, decision_id, waiting = _callback_of_the_hold(sessions, site_row)
    now = datetime.now(UTC)
    with sessions.begin() as session:  # an earlier decision's callback, still being retried
        earlier = Decision(
            comment_id=comment_id,
            outcome="hold",
            is_current=False,
            spam_score=0.05,
            advice_score=0.9,
            reasons=["medical_advice"],
            model_version="test-model",
            decided_by="model",
            created_at=now - timedelta(minutes=10),
        )
        session.add(earlier)
        session.flush()
        on_the_wire = callback_row(session, site_row, comment_id, earlier.id, "pending", "msg_earlier")
    verdict, outcome = _approve_in_a_thread(app, comment_id, decision_id)
    recorded = _a_410_recorded_while_a_verdict_waits(sessions, verdict, on_the_wire)
    assert recorded == {on_the_wire: "disabled"}
    assert outcome.get("status") == 200, outcome
    with sessions() as session:
        assert session.get_one(Site, site_row).callback_disabled_at is not None
        statuses = {row.id: row.status for row in session.execute(select(CallbackDelivery.id, CallbackDelivery.status))}
        assert (statuses.pop(waiting), statuses.pop(on_the_wire)) == ("cancelled", "cancelled")
        assert list(statuses.values()) == ["disabled"]  # the verdict's own, held back behind the 410


def test_undo_restores_the_previous_decision(
    moderator_client: FlaskClient, sessions: Sessions, held: list[tuple[int, int]]
) -> None:
    comment_id, decision_id = held[0]
    approved = act(moderator_client, comment_id, "approve", decision_id).get_json()["decision_id"]
    undone = act(moderator_client, comment_id, "undo", approved)
    assert undone.status_code == 200 and undone.get_json()["status"] == "held"
    with sessions() as session:
        assert session.get(Comment, comment_id).status == "held"
        assert session.scalar(select(TrainingLabel).where(TrainingLabel.comment_id == comment_id)) is None
        actions = [a.action for a in session.scalars(select(ModerationAction).order_by(ModerationAction.id))]
        assert actions == ["approve", "undo"]
        events = session.scalars(select(CallbackDelivery.event).where(CallbackDelivery.comment_id == comment_id)).all()
        assert events == ["comment.reviewed", "comment.reviewed"]
    redone = act(moderator_client, comment_id, "undo", undone.get_json()["decision_id"])
    assert redone.status_code == 400  # undoing the undo would approve again what was just withdrawn
    assert redone.get_json()["message"] == "the last action on this comment was an undo: approve or reject it instead"
    other_id, other_decision = held[1]
    assert act(moderator_client, other_id, "undo", other_decision).status_code == 400  # only the model decided


def _moderator_decisions(outcome: str) -> float:
    return REGISTRY.get_sample_value("moderation_decisions_total", {"outcome": outcome, "decided_by": "moderator"}) or 0


def test_moderators_verdicts_are_counted_and_a_refused_one_is_not(
    app: Flask, moderator_client: FlaskClient, held: list[tuple[int, int]]
) -> None:
    before = {outcome: _moderator_decisions(outcome) for outcome in ("approve", "reject", "hold")}
    (first, first_decision), (second, second_decision), (third, _) = held
    approved = act(moderator_client, first, "approve", first_decision)
    assert approved.status_code == 200
    assert act(moderator_client, first, "undo", approved.get_json()["decision_id"]).status_code == 200
    other = app.test_client()
    sign_in(other, "mod2@example.org")
    assert act(other, first, "reject", first_decision, reason="spam").status_code == 409  # the undo came since
    token = csrf_token(moderator_client, "/dashboard/queue")
    moderator_client.post(
        "/dashboard/bulk",
        data={
            "csrf_token": token,
            "action": "reject",
            "reason": "spam",
            "ids": [f"{second}:{second_decision}", f"{third}:999999"],
        },
        headers={"Accept": "application/json"},
    )
    counted = {outcome: _moderator_decisions(outcome) - before[outcome] for outcome in before}
    assert counted == {"approve": 1, "reject": 1, "hold": 1}  # the undo put the model's hold back


def _card(page: str, comment_id: int) -> str:
    match = re.search(rf'<article [^>]*id="c{comment_id}".*?</article>', page, re.DOTALL)
    assert match, f"no card of comment {comment_id}"
    return match.group(0)


def test_a_decision_an_undo_put_back_offers_no_undo_and_says_so(
    moderator_client: FlaskClient, held: list[tuple[int, int]]
) -> None:
    """Its Undo button undid the undo: the comment approved again, and no word said."""
    (undone_id, undone_decision), (approved_id, approved_decision) = held[:2]
    approval = act(moderator_client, undone_id, "approve", undone_decision).get_json()["decision_id"]
    assert act(moderator_client, undone_id, "undo", approval).status_code == 200
    assert act(moderator_client, approved_id, "approve", approved_decision).status_code == 200
    queue = _page(moderator_client, "/dashboard/queue?queue=all")
    comment_page = _page(moderator_client, f"/dashboard/comments/{undone_id}")
    for card in (_card(queue, undone_id), _card(comment_page, undone_id)):
        assert "Put back by mod@example.org (undo)" in card
        assert "Decided by" not in card and "undo-form" not in card
    assert "moderator:mod@example.org (undo)" in _section(comment_page, "Decisions")
    approved = _card(queue, approved_id)  # a verdict still offers its undo
    assert "Decided by mod@example.org" in approved and "undo-form" in approved and "Put back" not in approved


def test_bulk_reject_and_a_stale_item_is_reported(
    moderator_client: FlaskClient,
    sessions: Sessions,
    held: list[tuple[int, int]],
) -> None:
    token = csrf_token(moderator_client, "/dashboard/queue")
    ids = [f"{c}:{d}" for c, d in held[:2]] + [f"{held[2][0]}:999999"]
    response = moderator_client.post(
        "/dashboard/bulk",
        data={"csrf_token": token, "action": "reject", "reason": "spam", "ids": ids},
        headers={"Accept": "application/json"},
    )
    body = response.get_json()
    assert [o["comment_id"] for o in body["done"]] == [held[0][0], held[1][0]]
    assert [o["comment_id"] for o in body["failed"]] == [held[2][0]] and body["failed"][0]["conflict"]
    with sessions() as session:
        statuses = {c.id: c.status for c in session.scalars(select(Comment))}
        assert statuses == {held[0][0]: "rejected", held[1][0]: "rejected", held[2][0]: "held"}
        assert len(session.scalars(select(TrainingLabel)).all()) == 2
    page = _page(moderator_client, "/dashboard/queue?queue=rejected")
    assert 'data-count="rejected">2<' in page


def test_bulk_form_post_redirects_with_a_message(moderator_client: FlaskClient, held: list[tuple[int, int]]) -> None:
    token = csrf_token(moderator_client, "/dashboard/queue")
    response = moderator_client.post(
        "/dashboard/bulk", data={"csrf_token": token, "action": "approve", "ids": [f"{c}:{d}" for c, d in held]}
    )
    assert response.status_code == 302
    assert "approve: 3 comment(s) done." in _page(moderator_client, "/dashboard/queue")


def test_a_bulk_reject_as_other_without_a_note_is_refused_once_and_does_nothing(
    moderator_client: FlaskClient, sessions: Sessions, held: list[tuple[int, int]]
) -> None:
    """It was refused once per comment, three identical messages naming none of them."""
    token = csrf_token(moderator_client, "/dashboard/queue")
    data = {"csrf_token": token, "action": "reject", "reason": "other", "ids": [f"{c}:{d}" for c, d in held]}
    assert moderator_client.post("/dashboard/bulk", data=data).status_code == 302
    page = _page(moderator_client, "/dashboard/queue")
    assert page.count("Nothing done: say why in the note when the reason is &#39;other&#39;.") == 1
    with sessions() as session:
        assert {c.status for c in session.scalars(select(Comment))} == {"held"}
    as_json = moderator_client.post("/dashboard/bulk", data=data, headers={"Accept": "application/json"})
    assert as_json.status_code == 400
    assert as_json.get_json()["error"] == "say why in the note when the reason is 'other'"


@pytest.mark.parametrize("bad", ["\u00b2", "\u0661\u0662", "9" * 25, "9" * 5000, "0", "-1", "4 "])
def test_an_id_in_a_form_that_names_no_row_is_refused_and_acts_on_nothing(
    moderator_client: FlaskClient, sessions: Sessions, held: list[tuple[int, int]], bad: str
) -> None:
    """Form fields are hand-editable: "²" passed str.isdigit() and failed int() (a 500), Arabic-Indic
    digits named another comment, 25 digits overflowed the database; and in a bulk action the items before
    the bad one were saved under a 500. Each bad item is now refused by itself, before anything is done."""
    (first, first_decision), (second, _), _ = held
    token = csrf_token(moderator_client, "/dashboard/queue")
    response = moderator_client.post(
        "/dashboard/bulk",
        data={"csrf_token": token, "action": "approve", "ids": [f"{first}:{first_decision}", bad, f"{second}:{bad}"]},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200
    body = response.get_json()
    assert [o["comment_id"] for o in body["done"]] == [first]
    assert [o["message"] for o in body["failed"]] == [
        f"not a comment id: {bad[:40]!r}",
        f"not a decision id: {bad[:40]!r}",
    ]

    single = act(moderator_client, second, "approve", None, expected_decision_id=bad)
    assert single.status_code == 400 and single.get_json()["message"] == f"not a decision id: {bad[:40]!r}"
    with sessions() as session:
        assert session.get_one(Comment, second).status == "held"


def test_a_list_entry_for_no_site_or_with_a_nul_is_refused_with_the_reason(
    admin_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    def add(value: str, site_id: str, status: int = 422) -> str:
        """The page the form leads to: itself for a refusal (422), the list after a redirect for an entry added."""
        token = csrf_token(admin_client, "/dashboard/admin/lists")
        data = {"csrf_token": token, "list_kind": "block", "field": "word", "value": value, "site_id": site_id}
        response = admin_client.post("/dashboard/admin/lists", data=data)
        assert response.status_code == status
        if status == 302:
            response = admin_client.get(response.headers["Location"])
        return html.unescape(response.get_data(as_text=True))

    assert "there is no site with id 99999" in add("casino", "99999")
    assert "there is no site with id '\u00b2'" in add("casino", "\u00b2")  # was: an entry for all sites
    assert "value must not contain NUL characters" in add("cas\x00ino", str(site_row))
    with sessions() as session:
        assert session.scalars(select(ListEntry)).all() == []
    assert "Added" in add("casino", str(site_row), status=302)


# --- lists feed the policy ------------------------------------------------------------------------


def test_block_and_allow_lists_match(sessions: Sessions, site_row: int) -> None:
    now = datetime.now(UTC)
    with sessions.begin() as session:
        add_entry(session, "block", "word", "Casino", None, None, now)
        add_entry(session, "block", "domain", "cheap-rx.example", site_row, None, now)
        add_entry(session, "allow", "author", "nurse@clinic.example", None, None, now)
        site = session.get(Site, site_row)
        cid, _ = held_comment(session, site, "l1", "Best casino bonus at https://www.cheap-rx.example/x")
        allowed, _ = held_comment(session, site, "l2", "Thanks!", author_email="Nurse@clinic.example")
        entries = list(session.scalars(select(__import__("models.entities").entities.ListEntry)))
        blocked = match_lists(entries, session.get(Comment, cid))
        assert blocked.blocked_terms == ("casino", "cheap-rx.example") and not blocked.author_allowed
        assert match_lists(entries, session.get(Comment, allowed)).author_allowed


# --- admin ----------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client: FlaskClient, people: dict[str, int]) -> Iterator[FlaskClient]:
    assert sign_in(client, "admin@example.org").status_code == 302
    yield client


def test_admin_pages_render(admin_client: FlaskClient, site_row: int) -> None:
    for path in (
        "/dashboard/admin/sites",
        "/dashboard/admin/lists",
        "/dashboard/admin/moderators",
        "/dashboard/admin/callbacks",
        "/dashboard/admin/models",
        "/dashboard/overview",
        f"/dashboard/admin/sites/{site_row}/thresholds",
    ):
        _page(admin_client, path)
    assert admin_client.get("/dashboard/overview/data").get_json()["days"]


def rotate_form(client: FlaskClient, site_row: int) -> dict[str, str]:
    """What the Sites page's Rotate button sends: its CSRF token and the newest secret the page saw."""
    page = _page(client, "/dashboard/admin/sites")
    newest = re.search(rf'/sites/{site_row}/rotate".*?name="newest_secret" value="(\d+)"', page, re.S).group(1)
    return {"csrf_token": csrf_token(client, "/dashboard/admin/sites"), "newest_secret": newest}


def test_rotate_secret_shows_the_new_secret_once(admin_client: FlaskClient, sessions: Sessions, site_row: int) -> None:
    response = admin_client.post(f"/dashboard/admin/sites/{site_row}/rotate", data=rotate_form(admin_client, site_row))
    assert response.headers["Cache-Control"] == "no-store"
    secret = re.search(r"(whsec_[A-Za-z0-9+/=]+)", response.get_data(as_text=True)).group(1)
    with sessions() as session:
        assert session.get(Site, site_row).secrets[-1].secret == secret
    assert secret not in _page(admin_client, "/dashboard/admin/sites")


def test_sending_the_rotate_form_again_issues_no_second_secret(
    admin_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """Reloading the new-secret page sends the form again: a second rotation would cut short, to the
    overlap, the secret the admin had just copied."""
    form = rotate_form(admin_client, site_row)
    first = admin_client.post(f"/dashboard/admin/sites/{site_row}/rotate", data=form).get_data(as_text=True)
    copied = re.search(r"(whsec_[A-Za-z0-9+/=]+)", first).group(1)
    again = admin_client.post(f"/dashboard/admin/sites/{site_row}/rotate", data=form, follow_redirects=True)
    assert "was rotated since that page was loaded; nothing changed" in again.get_data(as_text=True)
    with sessions() as session:
        site = session.get_one(Site, site_row)
        assert [s.secret for s in site.secrets if s.expires_at is None] == [copied]
        assert len(site.secrets) == 2


def test_thresholds_save_and_lists_and_moderators(admin_client: FlaskClient, sessions: Sessions, site_row: int) -> None:
    token = csrf_token(admin_client, "/dashboard/admin/sites")
    admin_client.post(
        f"/dashboard/admin/sites/{site_row}/thresholds",
        data={"csrf_token": token, "spam_reject": "0.95", "spam_hold": "0.6", "advice_hold": "0.4"},
    )
    admin_client.post(
        "/dashboard/admin/lists",
        data={"csrf_token": token, "list_kind": "block", "field": "domain", "value": "https://spam.example/x"},
    )
    admin_client.post(
        "/dashboard/admin/moderators",
        data={"csrf_token": token, "email": "new@example.org", "role": "moderator", "password": "a long password"},
    )
    preview = admin_client.get(f"/dashboard/admin/sites/{site_row}/thresholds/preview?spam_reject=0.9&spam_hold=0.95")
    assert preview.status_code == 400  # hold above reject is refused before anything is saved
    with sessions() as session:
        site = session.get(Site, site_row)
        assert (site.spam_reject_threshold, site.spam_hold_threshold, site.advice_hold_threshold) == (0.95, 0.6, 0.4)
        from models.entities import ListEntry

        assert [e.value for e in session.scalars(select(ListEntry))] == ["spam.example"]
        assert session.scalar(select(Moderator).where(Moderator.email == "new@example.org")).role == "moderator"


# --- the lists reach the policy; the CLI; the demo set-up ------------------------------------------


def test_block_listed_word_makes_the_model_reject(
    sessions: Sessions, site_row: int, active_model: TrainedModel
) -> None:
    from moderation.decisions import decide_comment
    from moderation.intake import NewComment, accept_comment

    now = datetime.now(UTC)
    with sessions.begin() as session:
        add_entry(session, "block", "word", "zorblax", site_row, None, now)
        site = session.get(Site, site_row)
        new = NewComment(external_id="b-1", article_id="a", body="Thanks, this helped. Zorblax!")
        comment_id = accept_comment(session, site, "msg_b1", new, now).comment_id
        decided = decide_comment(session, comment_id, active_model.model, now)
        assert decided is not None and decided.outcome == "reject"
        current = session.scalar(select(Decision).where(Decision.comment_id == comment_id, Decision.is_current))
        assert "blocked_term" in current.reasons


def test_cli_adds_lists_deactivates_and_activates_moderators(database_url: str, engine: Engine, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from moderation.accounts import authenticate
    from server.cli import main

    def can_sign_in() -> bool:
        with make_session_factory(engine).begin() as session:
            return authenticate(session, "ana@example.org", "a long password", datetime.now(UTC)) is not None

    env = {"DATABASE_URL": database_url, "VAR_DIR": str(tmp_path), "LOG_FORMAT": "text"}
    runner = CliRunner()
    added = runner.invoke(
        main, ["moderators", "add", "Ana@Example.org", "--role", "admin"], input="a long password\n", env=env
    )
    assert added.exit_code == 0, added.output
    assert "admin ana@example.org added" in added.output
    short = runner.invoke(main, ["moderators", "add", "bo@example.org"], input="short\n", env=env)
    assert short.exit_code != 0 and "at least 10 characters" in short.output
    nothing = runner.invoke(main, ["moderators", "add", "bo@example.org"], input="", env=env)  # < /dev/null
    assert nothing.exit_code == 1
    assert nothing.stderr == "Error: no password on stdin: pipe it as the first line, or run this in a terminal\n"
    unknown = runner.invoke(main, ["moderators", "set-password", "nobody@example.org"], input="", env=env)
    assert (unknown.exit_code, unknown.stderr) == (1, "Error: no moderator nobody@example.org\n")  # not "no password"
    assert "ana@example.org\tadmin\tactive\tnever" in runner.invoke(main, ["moderators", "list"], env=env).output
    assert can_sign_in()
    deactivated = runner.invoke(main, ["moderators", "deactivate", "ana@example.org"], env=env)
    assert deactivated.exit_code == 0 and deactivated.stdout == "ana@example.org deactivated\n"
    assert deactivated.stderr.startswith("warning: no active admin is left: nobody can open the admin pages")
    assert "deactivated" in runner.invoke(main, ["moderators", "list"], env=env).output
    assert not can_sign_in()
    activated = runner.invoke(main, ["moderators", "activate", "ANA@example.org"], env=env)
    assert activated.exit_code == 0 and "ANA@example.org activated" in activated.output
    assert "ana@example.org\tadmin\tactive" in runner.invoke(main, ["moderators", "list"], env=env).output
    assert can_sign_in()
    # Twice: the second says nothing changed (a new user's report: it answered as if it had done it again).
    again = runner.invoke(main, ["moderators", "activate", "ana@example.org"], env=env)
    assert again.exit_code == 0 and again.stdout == "ana@example.org is already active; nothing changed\n"
    # With an admin left, deactivating someone else warns of nothing.
    assert (
        runner.invoke(main, ["moderators", "add", "bo@example.org"], input="another long one\n", env=env).exit_code == 0
    )
    quiet = runner.invoke(main, ["moderators", "deactivate", "bo@example.org"], env=env)
    assert quiet.exit_code == 0 and quiet.stdout == "bo@example.org deactivated\n" and quiet.stderr == ""
    twice = runner.invoke(main, ["moderators", "deactivate", "bo@example.org"], env=env)
    assert twice.exit_code == 0 and twice.stdout == "bo@example.org is already deactivated; nothing changed\n"
    assert twice.stderr == ""
    unknown = runner.invoke(main, ["moderators", "activate", "nobody@example.org"], env=env)
    assert unknown.exit_code != 0 and "no moderator nobody@example.org" in unknown.output


def test_demo_setup_is_created_once_and_reused(sessions: Sessions, tmp_path: Path) -> None:
    from moderation.accounts import authenticate
    from server.demo import ensure_demo

    first = ensure_demo(sessions, tmp_path, "http://127.0.0.1:8001/moderation-callback")
    again = ensure_demo(sessions, tmp_path, "http://127.0.0.1:8001/moderation-callback")
    assert first == again and first.other_sites == 0
    with sessions.begin() as session:  # paused by an admin: a restart of `moderation run` does not resume it
        callbacks.pause_callbacks(session, session.scalars(select(Site)).one(), datetime.now(UTC), "ops@example.org")
    ensure_demo(sessions, tmp_path, "http://127.0.0.1:8001/moderation-callback")
    with sessions() as session:
        assert session.scalars(select(Site.callbacks_paused_by)).one() == "ops@example.org"
    with sessions.begin() as session:  # the user registers their own (the banner's next step stops saying to)
        create_site(session, "backpain-advisor")
    assert ensure_demo(sessions, tmp_path, "http://127.0.0.1:8001/moderation-callback").other_sites == 1
    assert (tmp_path / "demo-admin.txt").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "example-site.secret").stat().st_mode & 0o777 == 0o600
    with sessions.begin() as session:
        assert authenticate(session, first.admin_email, first.admin_password, datetime.now(UTC)) is not None
        site = session.scalar(select(Site).where(Site.name == "example-site"))
        assert site.usable_secrets(datetime.now(UTC)) == [first.secret_file.read_text().strip()]


def test_demo_setup_does_not_claim_a_password_changed_since(sessions: Sessions, tmp_path: Path) -> None:
    from moderation.accounts import authenticate, find_moderator, set_password
    from server.demo import ensure_demo

    first = ensure_demo(sessions, tmp_path, "http://127.0.0.1:8001/moderation-callback")
    with sessions.begin() as session:
        admin = find_moderator(session, first.admin_email)
        assert admin is not None
        set_password(admin, "a password the operator chose")
    again = ensure_demo(sessions, tmp_path, "http://127.0.0.1:8001/moderation-callback")
    assert again.admin_password is None  # the file's password no longer signs in: not printed
    assert "changed" in (tmp_path / "demo-admin.txt").read_text()
    assert ensure_demo(sessions, tmp_path, "http://127.0.0.1:8001/moderation-callback").admin_password is None
    with sessions.begin() as session:
        assert authenticate(session, first.admin_email, "a password the operator chose", datetime.now(UTC))
        # A new database beside the same files: the note in the file is not a password to create one with.
        session.execute(delete(Moderator).where(Moderator.email == first.admin_email))
    fresh = ensure_demo(sessions, tmp_path, "http://127.0.0.1:8001/moderation-callback")
    assert fresh.admin_password is not None and "changed" not in fresh.admin_password
    with sessions.begin() as session:
        assert authenticate(session, first.admin_email, fresh.admin_password, datetime.now(UTC))


def test_set_password_of_the_demo_admin_leaves_no_stale_password_in_its_file(
    sessions: Sessions, database_url: str, tmp_path: Path
) -> None:
    """A new user's report: var/demo-admin.txt went on showing the first password after set-password, until the
    next `make run`. The file now says it was changed, as `make run` itself would, so `make run` goes on printing
    no password and keeps the one chosen (a deleted file would make it set a new one)."""
    from click.testing import CliRunner

    from moderation.accounts import authenticate
    from server.cli import main
    from server.demo import CHANGED_SINCE, ensure_demo

    first = ensure_demo(sessions, tmp_path, "http://127.0.0.1:8001/moderation-callback")
    password_file = tmp_path / "demo-admin.txt"
    env = {"DATABASE_URL": database_url, "VAR_DIR": str(tmp_path), "LOG_FORMAT": "text"}
    runner = CliRunner()
    added = runner.invoke(main, ["moderators", "add", "bo@example.org"], input="a long password\n", env=env)
    assert added.exit_code == 0
    other = runner.invoke(main, ["moderators", "set-password", "bo@example.org"], input="another password\n", env=env)
    assert other.exit_code == 0 and password_file.read_text() == f"{first.admin_password}\n"  # not the demo's account

    changed = runner.invoke(
        main, ["moderators", "set-password", "Admin@Example.org"], input="the operator's own\n", env=env
    )

    assert changed.exit_code == 0, changed.output
    assert changed.stdout.splitlines()[1] == (
        f"{password_file} no longer holds a password: `make run` stops printing one"
    )
    assert password_file.read_text() == f"{CHANGED_SINCE}\n"
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert ensure_demo(sessions, tmp_path, "http://127.0.0.1:8001/moderation-callback").admin_password is None
    with sessions.begin() as session:
        assert authenticate(session, first.admin_email, "the operator's own", datetime.now(UTC)) is not None
    again = runner.invoke(main, ["moderators", "set-password", "admin@example.org"], input="and again!!\n", env=env)
    assert again.stdout == "password of admin@example.org changed; its open sessions have ended\n"  # said once
    password_file.unlink()  # deleted, as README says a new password can be had: a chosen one must not be lost
    chosen = runner.invoke(main, ["moderators", "set-password", "admin@example.org"], input="my own choice\n", env=env)
    assert password_file.read_text() == f"{CHANGED_SINCE}\n" and "no longer holds a password" in chosen.stdout
    assert ensure_demo(sessions, tmp_path, "http://127.0.0.1:8001/moderation-callback").admin_password is None


def test_set_password_says_when_the_demo_file_it_cannot_rewrite_stays_stale(
    sessions: Sessions, database_url: str, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from server.cli import main

    with sessions.begin() as session:
        create_moderator(session, "admin@example.org", "the first password", "admin", datetime.now(UTC))
    (tmp_path / "demo-admin.txt").mkdir()  # in the way: writing it fails as a read-only VAR_DIR would
    env = {"DATABASE_URL": database_url, "VAR_DIR": str(tmp_path), "LOG_FORMAT": "text"}

    changed = CliRunner().invoke(
        main, ["moderators", "set-password", "admin@example.org"], input="a new one!\n", env=env
    )

    assert changed.exit_code == 0
    assert changed.stdout == "password of admin@example.org changed; its open sessions have ended\n"
    assert changed.stderr == f"warning: {tmp_path / 'demo-admin.txt'} still shows the old password: Is a directory\n"


def _held_back_by_a_410(session: Session, site_id: int, comments: list[tuple[int, int]]) -> list[int]:
    """The first comment's callback was answered 410 (the site is disabled); the others' were held back."""
    now = datetime.now(UTC)
    site = session.get(Site, site_id)
    site.callback_disabled_at = now
    ids = []
    for comment_id, decision_id in comments:
        comment, decision = session.get(Comment, comment_id), session.get(Decision, decision_id)
        delivery = callbacks.schedule_callback(session, site, comment, decision, callbacks.COMMENT_DECIDED, now)
        assert delivery.status == "disabled"
        ids.append(delivery.id)
    first = session.get(CallbackDelivery, ids[0])
    first.attempts, first.last_status_code = 1, 410
    return ids


def _statuses(sessions: Sessions, delivery_ids: list[int]) -> list[str]:
    with sessions() as session:
        return [session.get(CallbackDelivery, delivery_id).status for delivery_id in delivery_ids]


def test_saving_a_callback_url_releases_what_a_410_held_back(
    admin_client: FlaskClient, sessions: Sessions, site_row: int, held: list[tuple[int, int]]
) -> None:
    with sessions.begin() as session:
        gone, held_back = _held_back_by_a_410(session, site_row, held[:2])
    token = csrf_token(admin_client, "/dashboard/admin/sites")
    url = "http://127.0.0.1:9/working-callback"
    saved = admin_client.post(
        f"/dashboard/admin/sites/{site_row}/callback", data={"callback_url": url, "csrf_token": token}
    )
    assert saved.status_code == 302
    assert _statuses(sessions, [gone, held_back]) == ["pending", "pending"]
    with sessions() as session:
        assert session.get(Site, site_row).callback_disabled_at is None
        assert sorted(callbacks.due_deliveries(session, datetime.now(UTC))) == [gone, held_back]
    page = _page(admin_client, "/dashboard/admin/sites")
    assert "2 held-back callback(s) queued again" in page

    # The tester's next step, replaying the callback that got the 410, leaves nothing behind either.
    token = csrf_token(admin_client, "/dashboard/admin/callbacks")
    assert admin_client.post(f"/dashboard/admin/callbacks/{gone}/replay", data={"csrf_token": token}).status_code == 302
    assert _statuses(sessions, [gone, held_back]) == ["pending", "pending"]


def _post_site(client: FlaskClient, site_id: int, action: str, **form: str) -> str:
    token = csrf_token(client, "/dashboard/admin/sites")
    posted = client.post(f"/dashboard/admin/sites/{site_id}/{action}", data={"csrf_token": token, **form})
    assert posted.status_code == 302, posted.status_code
    return _page(client, "/dashboard/admin/sites")


def test_an_admin_pauses_a_sites_callbacks_and_resumes_them(
    admin_client: FlaskClient, sessions: Sessions, site_row: int, held: list[tuple[int, int]]
) -> None:
    now = datetime.now(UTC)
    with sessions.begin() as session:
        site = session.get_one(Site, site_row)
        waiting = [
            callbacks.schedule_callback(
                session, site, session.get_one(Comment, c), session.get_one(Decision, d), callbacks.COMMENT_DECIDED, now
            )
            for c, d in held[:2]
        ]
        ids = [delivery.id for delivery in waiting if delivery is not None]

    page = _post_site(admin_client, site_row, "pause")
    assert "2 waiting callback(s) held back until resumed" in page
    assert "paused by admin@example.org since" in page
    assert _statuses(sessions, ids) == ["disabled", "disabled"]
    with sessions() as session:
        paused_at = session.get_one(Site, site_row).callback_disabled_at
    again = _post_site(admin_client, site_row, "pause")  # a second click says so and keeps the first pause
    assert "Callbacks of backpain-advisor were already paused by admin@example.org; 0 more held back." in again
    with sessions() as session:
        assert session.get_one(Site, site_row).callback_disabled_at == paused_at
    with sessions() as session:
        assert callbacks.due_deliveries(session, now + timedelta(days=1)) == []
    failures = _page(admin_client, "/dashboard/admin/callbacks")  # held back is not failed: counted apart
    assert "2 more held back for paused sites" in failures and f"/dashboard/admin/callbacks/{ids[0]}/" not in failures

    # Paused without an address (as `sites pause` allows), the page says how to resume rather than offer nothing.
    with sessions.begin() as session:
        session.get_one(Site, site_row).callback_url = None
    assert "Save a callback URL (left); then they can be resumed here." in _page(admin_client, "/dashboard/admin/sites")
    # A new address does not end the pause (it would end a 410's: that was about the old address).
    page = _post_site(admin_client, site_row, "callback", callback_url="http://127.0.0.1:9/new-callback")
    assert "its callbacks stay paused until resumed" in page
    assert _statuses(sessions, ids) == ["disabled", "disabled"]

    page = _post_site(admin_client, site_row, "resume")
    assert "2 held-back callback(s) queued again" in page
    assert "paused by" not in page
    with sessions() as session:
        site = session.get_one(Site, site_row)
        assert (site.callback_disabled_at, site.callbacks_paused_by) == (None, None)
        assert sorted(callbacks.due_deliveries(session, datetime.now(UTC))) == sorted(ids)


def test_a_site_without_a_callback_url_is_not_resumed(
    admin_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    _post_site(admin_client, site_row, "pause")
    _post_site(admin_client, site_row, "callback", callback_url="")
    page = _post_site(admin_client, site_row, "resume")
    assert "has no callback URL to send to: save one first" in page
    with sessions() as session:
        assert session.get_one(Site, site_row).callbacks_paused_by == "admin@example.org"


def test_clearing_the_callback_url_keeps_what_a_410_held_back(
    admin_client: FlaskClient, sessions: Sessions, site_row: int, held: list[tuple[int, int]]
) -> None:
    with sessions.begin() as session:
        held_back = _held_back_by_a_410(session, site_row, held[:2])
    token = csrf_token(admin_client, "/dashboard/admin/sites")
    cleared = admin_client.post(
        f"/dashboard/admin/sites/{site_row}/callback", data={"callback_url": "", "csrf_token": token}
    )
    assert cleared.status_code == 302
    assert _statuses(sessions, held_back[1:]) == ["disabled"]  # nowhere to send it: not a dead letter
    with sessions() as session:
        site = session.get(Site, site_row)
        assert site.callback_url is None or site.callback_url == ""
        assert site.callback_disabled_at is not None
    assert "cleared" in _page(admin_client, "/dashboard/admin/sites")


def test_a_callback_url_cleared_by_mistake_holds_back_what_waited_and_loses_nothing(
    admin_client: FlaskClient, sessions: Sessions, site_row: int, held: list[tuple[int, int]]
) -> None:
    """Waiting callbacks became dead letters when their attempt came due with no URL, even if it was cleared
    for a moment; now they wait for a URL, and saving one sends them."""
    with sessions.begin() as session:
        site = session.get_one(Site, site_row)
        site.callback_url = "https://site.example/hook"
        now = datetime.now(UTC)
        waiting = []
        for comment_id, decision_id in held[:2]:
            comment, decision = session.get_one(Comment, comment_id), session.get_one(Decision, decision_id)
            delivery = callbacks.schedule_callback(session, site, comment, decision, callbacks.COMMENT_DECIDED, now)
            waiting.append(delivery.id)
    assert _statuses(sessions, waiting) == ["pending", "pending"]
    cleared = _post_site(admin_client, site_row, "callback", callback_url="")
    assert "cleared. 2 waiting callback(s) held back until a URL is saved." in cleared
    assert _statuses(sessions, waiting) == ["disabled", "disabled"]
    with sessions.begin() as session:  # beat's retry loop does not send them anywhere meanwhile
        assert callbacks.release_held_back(session, datetime.now(UTC)) == 0
    saved = _post_site(admin_client, site_row, "callback", callback_url="https://site.example/hook")
    assert "2 held-back callback(s) queued again" in saved
    assert _statuses(sessions, waiting) == ["pending", "pending"]


def test_demo_setup_releases_what_a_410_held_back(sessions: Sessions, tmp_path: Path) -> None:
    from server.demo import EXAMPLE_SITE, ensure_demo

    ensure_demo(sessions, tmp_path, "http://127.0.0.1:8001/moderation-callback")
    with sessions.begin() as session:
        site = session.scalar(select(Site).where(Site.name == EXAMPLE_SITE))
        comments = [held_comment(session, site, f"c-{n}") for n in range(2)]
        held_back = _held_back_by_a_410(session, site.id, comments)
    ensure_demo(sessions, tmp_path, "http://127.0.0.1:8001/moderation-callback")  # `make run` again
    assert _statuses(sessions, held_back) == ["pending", "pending"]
    with sessions() as session:
        assert session.scalar(select(Site.callback_disabled_at).where(Site.name == EXAMPLE_SITE)) is None


def test_dead_letter_is_listed_and_replayed(
    admin_client: FlaskClient, sessions: Sessions, held: list[tuple[int, int]]
) -> None:
    comment_id, decision_id = held[0]
    with sessions.begin() as session:
        delivery_id = dead_callback(session, session.get(Comment, comment_id).site_id, comment_id, decision_id)
    page = _page(admin_client, "/dashboard/admin/callbacks")
    assert f"/dashboard/admin/callbacks/{delivery_id}/replay" in page
    token = csrf_token(admin_client, "/dashboard/admin/callbacks")
    assert (
        admin_client.post(f"/dashboard/admin/callbacks/{delivery_id}/replay", data={"csrf_token": token}).status_code
        == 302
    )
    with sessions() as session:
        replayed = session.get(CallbackDelivery, delivery_id)
        assert (replayed.status, replayed.attempts) == ("pending", 0)


@pytest.mark.parametrize("status", ["delivered", "sending"])
def test_replay_refuses_a_callback_that_is_delivered_or_on_the_wire(
    admin_client: FlaskClient, sessions: Sessions, held: list[tuple[int, int]], status: str
) -> None:
    """A second click on Replay, a second admin's page loaded before the first replay, or a reload sending the
    form again put a delivered callback back to pending (the site was told again), or one a worker is sending
    right now (a second send at once): the admin is told why nothing was done."""
    comment_id, decision_id = held[0]
    with sessions.begin() as session:
        delivery_id = dead_callback(session, session.get(Comment, comment_id).site_id, comment_id, decision_id)
        delivery = session.get(CallbackDelivery, delivery_id)
        delivery.status, delivery.attempts = status, 1
        delivery.lease_until = datetime(2999, 1, 1, tzinfo=UTC) if status == "sending" else None
    token = csrf_token(admin_client, "/dashboard/admin/callbacks")
    replayed = admin_client.post(f"/dashboard/admin/callbacks/{delivery_id}/replay", data={"csrf_token": token})
    assert replayed.status_code == 302
    with sessions() as session:
        after = session.get(CallbackDelivery, delivery_id)
        assert (after.status, after.attempts) == (status, 1), f"a {status} callback was reset to {after.status}"
    said = {"delivered": "was delivered already", "sending": "is being sent right now"}[status]
    assert f"Callback {delivery_id} {said}" in _page(admin_client, "/dashboard/admin/callbacks")


@pytest.mark.parametrize("target", ["//evil.example/x", "/\\evil.example", "https://evil.example/"])
def test_login_never_redirects_off_site(client: FlaskClient, people: dict[str, int], target: str) -> None:
    token = csrf_token(client)
    response = client.post(
        "/dashboard/login",
        query_string={"next": target},
        data={"email": "mod@example.org", "password": PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/dashboard/queue"


# --- review fixes: search in any script, score ranges, deleted comments, unsafe article URLs, models ----------


def _ids_on(client: FlaskClient, path: str) -> set[int]:
    return {int(n) for n in re.findall(r'data-comment-id="(\d+)"', _page(client, path))}


def test_search_and_author_filter_ignore_case_in_every_script(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        russian, _ = held_comment(session, site, "ru", "Массаж помог моей спине.", author_name="Иван")
        french, _ = held_comment(
            session, site, "fr", "Le MASSAGE m'a aidé.", author_name="Émile", author_email="ÉMILE@exemple.fr"
        )
    assert _ids_on(moderator_client, "/dashboard/queue?text=массаж") == {russian}
    assert _ids_on(moderator_client, "/dashboard/queue?text=МАССАЖ") == {russian}
    assert _ids_on(moderator_client, "/dashboard/queue?text=massage") == {french}
    assert _ids_on(moderator_client, "/dashboard/queue?author=иван") == {russian}
    assert _ids_on(moderator_client, "/dashboard/queue?author=émile") == {french}
    assert _ids_on(moderator_client, "/dashboard/queue?author=émile@EXEMPLE") == {french}


def _found_by_text(client: FlaskClient, term: str) -> set[int]:
    """The comments the queue's text filter finds for ``term``, sent as a browser would."""
    return _ids_on(client, "/dashboard/queue?text=" + quote(term, safe=""))


def test_search_finds_a_word_dressed_with_characters_drawn_as_nothing(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """A zero-width space between the letters of "viagra", or a soft hyphen inside "pills", kept a comment out
    of a search for the word its readers see; LIKE's wildcards in a term still match only themselves."""
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        spaced, _ = held_comment(session, site, "zwsp", "Cheap v\u200bi\u200ba\u200bg\u200br\u200ba here")
        hyphened, _ = held_comment(session, site, "shy", "Buy pi\u00adlls online")
        joined, _ = held_comment(session, site, "joiners", "VI\u2060AG\ufeffRA and P\u200cI\u200dLLS")
        plain, _ = held_comment(session, site, "plain", "Viagra and pills, 100% off_label, C:\\temp")
        family, _ = held_comment(session, site, "emoji", "A day out 👨\u200d👩\u200d👧 and no pills")
        accented, _ = held_comment(session, site, "accents", "Ces pilules (pills) coûtent cher")

    def found(term: str) -> set[int]:
        return _found_by_text(moderator_client, term)

    assert found("viagra") == {spaced, joined, plain}
    assert found("PILLS") == {hyphened, joined, plain, family, accented}
    assert found("coûtent") == {accented}
    assert found("vi\u200bag\u00adra") == {spaced, joined, plain}  # a term pasted with them in reads as shown
    assert found("👨\u200d👩\u200d👧") == {family}  # an emoji's own joiners are in the term as in the text
    assert found("\u200b") == {spaced}  # a term of nothing else looks for that character
    assert found("100%") == {plain} and found("0%") == {plain} and found("%") == {plain}
    assert found("off_label") == {plain} and found("of_label") == set() and found("f%l") == set()
    assert found("c:\\temp") == {plain} and found("c:\\") == {plain} and found("\\t") == {plain}
    assert '<span class="count" data-count="held">3</span>' in _page(moderator_client, "/dashboard/queue?text=viagra")


def test_search_reads_past_every_character_drawn_as_nothing_and_folds_case_and_forms_in_every_script(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """Past the six characters the search once read past: a direction mark, a variation selector or a tag
    character inside a word hid it too. Case is folded as Unicode folds it, on SQLite as on PostgreSQL, and
    fullwidth letters read as the letters they show."""
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        marked, _ = held_comment(session, site, "lrm", "Cheap vi\u200eag\u200fra here")
        selected, _ = held_comment(session, site, "vs16", "Cheap via\ufe0fgra here")
        tagged, _ = held_comment(session, site, "tag", "Cheap vi\U000e0061agra here")
        french, _ = held_comment(session, site, "fr", "Une école du dos à Paris")
        german, _ = held_comment(session, site, "de", "Die Rückenschule in der Hauptstraße")
        wide, _ = held_comment(session, site, "wide", "Buy ＶＩＡＧＲＡ now")

    def found(term: str) -> set[int]:
        return _found_by_text(moderator_client, term)

    assert found("viagra") == {marked, selected, tagged, wide}
    assert found("ÉCOLE") == {french} and found("école") == {french}
    assert found("HAUPTSTRASSE") == {german} and found("hauptstraße") == {german}
    assert found("ＲＡ now") == {wide}


def test_author_and_article_filters_read_past_characters_drawn_as_nothing_too(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """Each field on its own: a term never spans the end of one and the start of the next."""
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        spaced, _ = held_comment(
            session, site, "spaced", author_name="Jo\u200bhn Sm\u2060ith", author_email="promo@PHAR\u00adMA.example"
        )
        hyphened, _ = held_comment(
            session, site, "article", author_name="Ana", article_title="Bandscheiben\u00advorfall: \u200fwas hilft"
        )

    def found(filter_: str, term: str) -> set[int]:
        return _ids_on(moderator_client, f"/dashboard/queue?{filter_}=" + quote(term, safe=""))

    assert found("author", "john smith") == {spaced} and found("author", "pharma.example") == {spaced}
    assert found("author", "smithpromo") == set() and found("author", "smith promo") == set()
    assert found("article", "BANDSCHEIBENVORFALL") == {hyphened}
    assert found("article", "therapydoes") == set() and found("article", "therapy does") == set()  # id, title


def test_any_score_range_needs_one_score_inside_it(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        inside, _ = held_comment(session, site, "inside", "One score in the range.", spam=0.1, advice=0.5)
        around, _ = held_comment(session, site, "around", "One above, one below.", spam=0.9, advice=0.1)
        advice_only, _ = held_comment(session, site, "advice", "Advice in the range.", spam=0.9, advice=0.45)
    assert _ids_on(moderator_client, "/dashboard/queue?score_min=0.4&score_max=0.6") == {inside, advice_only}
    assert _ids_on(moderator_client, "/dashboard/queue?score=spam&score_min=0.4&score_max=0.6") == set()
    assert _ids_on(moderator_client, "/dashboard/queue?score_min=0.85") == {around, advice_only}
    assert _ids_on(moderator_client, "/dashboard/queue?score_max=0.2") == {inside, around}


def test_a_comment_the_site_deleted_offers_no_action(
    moderator_client: FlaskClient, sessions: Sessions, held: list[tuple[int, int]]
) -> None:
    deleted_id, _ = held[0]
    with sessions.begin() as session:
        session.get(Comment, deleted_id).status = "deleted"
    page = _page(moderator_client, f"/dashboard/comments/{deleted_id}")
    assert "Deleted by the site: nothing to review." in page
    assert "approve-form" not in page and "reject-form" not in page and "undo-form" not in page
    assert "approve-form" in _page(moderator_client, f"/dashboard/comments/{held[1][0]}")


def _section(page: str, heading: str) -> str:
    """The text of a comment page's section, without its markup."""
    match = re.search(rf"<h2>{heading}</h2>(.*?)</section>", page, re.DOTALL)
    assert match, f"no section {heading}"
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())


def test_a_comment_deleted_before_it_was_created_says_what_became_of_it(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """A ``comment.deleted`` for a comment never created leaves a tombstone: no text, article or decision."""
    now = datetime.now(UTC)
    with sessions.begin() as session:
        tombstone = apply_delete(session, session.get(Site, site_row), "wh-delete", "never-seen", now, now).comment_id
    page = _page(moderator_client, f"/dashboard/comments/{tombstone}")
    assert _section(page, "Decisions") == "None: the site deleted this comment before it was decided."
    # The site has a callback URL: what stops a callback is the deletion.
    assert _section(page, "Callbacks to the site") == "None: nothing is sent to the site about a comment it deleted."
    assert 'class="article"' not in page and ">on <" not in page


@pytest.mark.parametrize(
    ("state", "decisions_said", "callbacks_said"),
    [
        (
            "waiting",
            "None yet: the comment is waiting for its decision.",
            "None yet: the comment is waiting for its decision.",
        ),
        ("no-callback-url", "hold", "None: the site has no callback URL."),
        ("decided", "hold", "None."),
    ],
)
def test_a_comment_without_callbacks_says_why(
    moderator_client: FlaskClient,
    sessions: Sessions,
    site_row: int,
    state: str,
    decisions_said: str,
    callbacks_said: str,
) -> None:
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        comment_id, decision_id = held_comment(session, site, "c-1")
        if state == "waiting":  # the model has not decided it yet
            session.delete(session.get(Decision, decision_id))
            session.get(Comment, comment_id).status = "pending"
        if state == "no-callback-url":
            site.callback_url = None
    page = _page(moderator_client, f"/dashboard/comments/{comment_id}")
    assert decisions_said in _section(page, "Decisions")
    assert _section(page, "Callbacks to the site") == callbacks_said


def test_an_article_with_an_unsafe_url_shows_its_title_as_text(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    with sessions.begin() as session:
        comment_id, _ = held_comment(session, session.get(Site, site_row), "js", "Nice article.")
        comment = session.get(Comment, comment_id)
        comment.article_url = "javascript:alert(1)"
        comment.article_title = "Back <b>pain</b> & you"
    for path in ("/dashboard/queue", f"/dashboard/comments/{comment_id}"):
        page = _page(moderator_client, path)
        assert "on <span" in page and "Back &lt;b&gt;pain&lt;/b&gt; &amp; you</span>" in page
        assert "javascript:alert(1)" not in page


def test_models_page_shows_a_dash_for_a_metric_without_a_value(admin_client: FlaskClient, sessions: Sessions) -> None:
    with sessions.begin() as session:
        card = {
            "metrics": {
                "held_out_by_source": {"own": {"spam": {"f1": 0.0, "pr_auc": None}}},
                "policy_own_held_out": {"leak_rate": None, "review_load": 0.12},
            }
        }
        session.add(ModelVersion(version="v-none", path="v-none.skops", sha256="0" * 64, card=card))
    page = _page(admin_client, "/dashboard/admin/models")
    assert "own · spam: 0.0 / –" in page
    assert "None" not in page
    assert "<td>12.0 %</td>" in page  # rates read as on the thresholds page, not as 0.12


@pytest.mark.parametrize(
    ("query", "shown"),
    [("date_to=9999-12-31", True), ("date_from=9999-12-31", False), ("page=99999999999999999999", True)],
    ids=["last-day", "from-last-day", "huge-page-shows-the-last"],
)
def test_the_queue_takes_the_extremes_of_its_filters(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int, query: str, shown: bool
) -> None:
    with sessions.begin() as session:
        held, _ = held_comment(session, session.get(Site, site_row), "c-1", "Massage helped me.", advice=0.55)
    response = moderator_client.get(f"/dashboard/queue?{query}")
    assert response.status_code == 200
    assert (f'data-comment-id="{held}"' in response.get_data(as_text=True)) == shown


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("score_min=abc", "the minimum score \u201cabc\u201d is not a number from 0 to 1: not applied"),
        ("score_max=1.5", "the maximum score \u201c1.5\u201d is not a number from 0 to 1: not applied"),
        ("score_min=nan", "the minimum score \u201cnan\u201d is not a number from 0 to 1: not applied"),
        ("date_from=2026-13-01", "the first date \u201c2026-13-01\u201d is not a date (YYYY-MM-DD): not applied"),
        ("reason=made_up", "there is no reason \u201cmade_up\u201d: any instead"),
        ("sort=loudest", "there is no order \u201cloudest\u201d: oldest instead"),
        ("page=two", "the page \u201ctwo\u201d is not a whole number: the first instead"),
        ("score_min=0.9&score_max=0.1", "the minimum score is above the maximum, so no comment could match"),
        ("site=nosuch", "there is no site \u201cnosuch\u201d, so no comment can match"),
    ],
)
def test_the_queue_says_which_filter_values_it_could_not_apply(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int, query: str, said: str
) -> None:
    """A value the form cannot produce (a hand-edited or old link) is named on the page, not silently dropped."""
    with sessions.begin() as session:
        held, _ = held_comment(session, session.get(Site, site_row), "c-1", "Massage helped me.", advice=0.55)
    page = _page(moderator_client, f"/dashboard/queue?{query}")
    problems = page.split('id="filter-problems"', 1)[1].split("</div>", 1)[0]
    assert html.escape(said, quote=False) in problems
    could_match = "score_max=0.1" not in query and "site=" not in query
    assert (f'data-comment-id="{held}"' in page) == could_match  # what could be applied still is
    assert 'id="filter-problems"' not in _page(moderator_client, "/dashboard/queue?score_min=0.5&sort=risk")


def test_the_queue_tabs_count_what_the_filters_match(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        held_comment(session, site, "h-1", "Massage helped my back a lot.")
        held_comment(session, site, "h-2", "Cheap braces at shop.example")
        rejected, _ = held_comment(session, site, "r-1", "Cheap pills at shop.example")
        session.get_one(Comment, rejected).status = "rejected"

    def tab(page: str, name: str) -> int:
        return int(re.search(rf'data-count="{name}">(\d+)<', page).group(1))

    everything = _page(moderator_client, "/dashboard/queue")
    assert (tab(everything, "held"), tab(everything, "rejected"), tab(everything, "all")) == (2, 1, 3)
    filtered = _page(moderator_client, "/dashboard/queue?text=shop.example")
    assert (tab(filtered, "held"), tab(filtered, "rejected"), tab(filtered, "all")) == (1, 1, 2)
    assert "Counts of the comments the filters match" in filtered


def test_the_queue_says_how_many_comments_its_filters_match_not_how_many_its_page_shows(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """The "N comments" line counts every comment the filters match, on every page (a reviewer's worry: the
    rows of the page counted, which would say 25 on a first page of 32)."""
    from dashboard.queries import PAGE_SIZE

    matching = PAGE_SIZE + 7
    with sessions.begin() as session:
        site = session.get_one(Site, site_row)
        for n in range(matching):
            held_comment(session, site, f"s-{n}", f"Cheap braces number {n} at shop.example", author_ip=f"192.0.2.{n}")
        for n in range(3):
            held_comment(session, site, f"o-{n}", f"Massage helped my back, week {n}.")

    def summary(query: str) -> tuple[str, int]:
        page = _page(moderator_client, f"/dashboard/queue?{query}")
        line = re.search(r'<p class="summary">(.*?)</p>', page, re.S)
        assert line is not None
        return re.sub(r"<[^>]+>", "", line.group(1)), page.count('class="item ')

    assert summary("text=shop.example") == (f"{matching} comments · page 1 of 2", PAGE_SIZE)
    assert summary("text=shop.example&page=2") == (f"{matching} comments · page 2 of 2", 7)
    assert summary("") == (f"{matching + 3} comments · page 1 of 2", PAGE_SIZE)


@pytest.mark.parametrize(
    "url",
    [
        "/dashboard/comments/99999999999",
        "/dashboard/comments/0",
        "/dashboard/admin/sites/99999999999/thresholds",
        "/dashboard/admin/sites/2147483648/thresholds/preview",
    ],
)
def test_ids_no_table_can_hold_are_not_found(admin_client: FlaskClient, url: str) -> None:
    assert admin_client.get(url).status_code == 404


@pytest.mark.parametrize("body", ["Line of a poem\n" * 12, "A long story. " * 40], ids=["many-lines", "many-words"])
def test_a_text_long_enough_to_scroll_in_its_queue_card_takes_the_keyboards_focus(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int, body: str
) -> None:
    """The queue's card limits the text's height and scrolls it; a scrolling region must be reachable by
    keyboard (axe: scrollable-region-focusable). A short text is no tab stop; on its own page the text is whole."""
    with sessions.begin() as session:
        site = session.get(Site, site_row)
        long_id, _ = held_comment(session, site, "c-long", body)
        short_id, _ = held_comment(session, site, "c-short", "Short and sweet.")
    queue = _page(moderator_client, "/dashboard/queue")
    focusable = re.findall(
        r'<article[^>]*data-comment-id="(\d+)".*?<p class="comment-body" dir="auto"( tabindex="0")?>', queue, re.S
    )
    assert {int(comment_id): bool(tab) for comment_id, tab in focusable} == {long_id: True, short_id: False}
    assert 'class="comment-body" dir="auto" tabindex' not in _page(moderator_client, f"/dashboard/comments/{long_id}")


def _bars(page: str) -> dict[str, tuple[str, str]]:
    """Each score bar's colour by its label, as a browser works it out (HTML's meter with its optimum below
    ``low``: good up to and including ``low``, so-so up to and including ``high``, bad above), and its title."""
    found = re.findall(
        r'<meter aria-label="([^"]+) score" title="([^"]+)" min="([^"]+)" max="1" low="([^"]+)" high="([^"]+)" '
        r'optimum="([^"]+)" value="([^"]+)"',
        page,
    )
    bars = {}
    for label, title, least, low, high, optimum, value in found:
        assert float(least) <= float(optimum) < float(low) <= float(high) <= 1  # the regions as read below
        colour = "green" if float(value) <= float(low) else "amber" if float(value) <= float(high) else "red"
        bars[label] = (colour, title.split(": ")[-1])
    return bars


def test_score_bars_turn_at_the_lines_the_comment_was_decided_by(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    # held for advice at 0.31 by a model that holds from 0.24: a bar that turned at 0.5 showed it green
    with sessions.begin() as session:
        lines = {"spam_reject": 0.7, "spam_hold": 0.16, "advice_hold": 0.24}
        card = {"thresholds": lines}
        session.add(ModelVersion(version="test-model", path="m.skops", sha256="0" * 64, card=card))
        site = session.get(Site, site_row)
        held, _ = held_comment(session, site, "c-1", spam=0.16, advice=0.31)  # spam exactly at its line
    for path in ("/dashboard/queue", f"/dashboard/comments/{held}"):
        bars = _bars(_page(moderator_client, path))
        assert bars["Spam"] == ("amber", "held from 0.16, rejected from 0.70")
        assert bars["Medical advice"] == ("red", "held from 0.24")
    with sessions.begin() as session:
        rejected, _ = held_comment(session, session.get(Site, site_row), "c-2", spam=0.7, advice=0.2399)
    bars = _bars(_page(moderator_client, f"/dashboard/comments/{rejected}"))
    assert (bars["Spam"][0], bars["Medical advice"][0]) == ("red", "green")

    # A newer model with other lines does not change how the older model's scores read; the site's own do.
    with sessions.begin() as session:
        newer = {"spam_reject": 0.9, "spam_hold": 0.5, "advice_hold": 0.4}
        session.add(
            ModelVersion(version="v2", path="v2.skops", sha256="1" * 64, is_active=True, card={"thresholds": newer})
        )
    assert _bars(_page(moderator_client, f"/dashboard/comments/{held}"))["Medical advice"][0] == "red"
    with sessions.begin() as session:
        session.get(Site, site_row).advice_hold_threshold = 0.4
    assert _bars(_page(moderator_client, f"/dashboard/comments/{held}"))["Medical advice"] == (
        "green",
        "held from 0.40",
    )
    with sessions.begin() as session:  # a line at 0 holds every score, the smallest too
        session.get(Site, site_row).advice_hold_threshold = 0.0
        zero, _ = held_comment(session, session.get(Site, site_row), "c-3", advice=0.0)
    assert _bars(_page(moderator_client, f"/dashboard/comments/{zero}"))["Medical advice"][0] == "red"


def test_score_bars_keep_the_lines_a_decision_recorded_after_its_site_changes_its_own(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """A decision made with the site's advice line at 0.2 (its scores 0.31: held) is drawn against that line
    when the site has moved it to 0.4 since; a decision from before lines were recorded uses today's."""
    decided_with = {"spam_reject": 0.7, "spam_hold": 0.16, "advice_hold": 0.2}
    with sessions.begin() as session:
        site = session.get_one(Site, site_row)
        held, decision = held_comment(session, site, "c-1", spam=0.1, advice=0.31)
        session.get_one(Decision, decision).thresholds = decided_with
        site.advice_hold_threshold = 0.4
    for path in ("/dashboard/queue", f"/dashboard/comments/{held}"):
        page = _page(moderator_client, path)
        assert _bars(page)["Medical advice"] == ("red", "held from 0.20")
        assert "the line it was decided with (its model's, or its site's own then): held from 0.20" in html.unescape(
            page
        )
    with sessions.begin() as session:
        older, _ = held_comment(session, session.get_one(Site, site_row), "c-2", spam=0.1, advice=0.31)
    page = _page(moderator_client, f"/dashboard/comments/{older}")
    assert _bars(page)["Medical advice"] == ("green", "held from 0.40")
    assert "the line of the deciding model, or the site's own today: held from 0.40" in html.unescape(page)


def test_the_longest_address_an_account_takes_still_records_its_verdicts(
    moderator_client: FlaskClient, sessions: Sessions, site_row: int
) -> None:
    """A verdict is recorded as decided by "moderator:<address>" in 320 characters: an account with a longer
    address got a 500 on every verdict, so accounts take 310 at most."""
    longest = "m" * (MAX_EMAIL_CHARS - len("@example.org")) + "@example.org"
    with sessions.begin() as session:
        with pytest.raises(AccountError, match="at most 310 characters"):
            create_moderator(session, "m" + longest, "a long password", "moderator", datetime.now(UTC))
        create_moderator(session, longest, "a long password", "moderator", datetime.now(UTC))
        held, decision = held_comment(session, session.get(Site, site_row), "c-1")
    client = moderator_client.application.test_client()
    assert sign_in(client, longest, "a long password").status_code == 302
    assert act(client, held, "approve", decision).status_code == 200
    with sessions() as session:
        current = session.scalars(select(Decision).where(Decision.comment_id == held, Decision.is_current)).one()
        assert current.decided_by == f"moderator:{longest}"


def test_a_long_text_that_is_no_address_is_refused_for_its_length_not_quoted_whole(sessions: Sessions) -> None:
    """The form keeps what was typed cut to the column's length; the refusal quoted all of it."""
    with sessions.begin() as session, pytest.raises(AccountError) as refused:
        create_moderator(session, "not an address " * 1000, "a long password", "moderator", datetime.now(UTC))
    assert str(refused.value) == f"an e-mail address can have at most {MAX_EMAIL_CHARS} characters here"


@pytest.mark.parametrize(
    "address", ["<b>x</b>@example.org", "<img/src=x/onerror=alert(9)>@example.org", "a b@example.org", "x@y"]
)
def test_an_admin_cannot_add_a_moderator_whose_address_is_not_one(
    admin_client: FlaskClient, sessions: Sessions, address: str
) -> None:
    """The browser's e-mail field checks this, but a hand-made request skipped it and the account was made."""
    token = csrf_token(admin_client, "/dashboard/admin/moderators")
    refused = admin_client.post(
        "/dashboard/admin/moderators",
        data={"csrf_token": token, "email": address, "role": "moderator", "password": "a long password"},
    )
    assert refused.status_code == 422  # the page again, saying why (tests/test_admin_pages.py)
    page = refused.get_data(as_text=True)
    assert "is not an e-mail address" in page
    assert address not in page or "<" not in address  # echoed in the message and the form, escaped
    with sessions() as session:
        assert session.scalar(select(Moderator).where(Moderator.email == address.lower())) is None
