"""Who gets in: dashboard sessions (fixation, sign-out, copied cookies), every route by role, intake limits.

All through the real app from `create_app`, with CSRF on, on SQLite and PostgreSQL with real Redis.
"""

# Rows looked up by id are there (a None fails the test anyway): no narrowing at every lookup.
# mypy: disable-error-code="union-attr"

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from flask import Flask, url_for
from flask.testing import FlaskClient
from flask_login import login_manager as flask_login_manager
from itsdangerous import TimestampSigner
from sqlalchemy import inspect, text
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from dashboard import CONTENT_SECURITY_POLICY
from models.db import create_db_engine
from models.entities import Comment, Moderator
from models.migrate import downgrade_database, upgrade_database
from moderation.lists import add_entry
from moderation.sites import create_site
from server.cli import main
from server.factory import create_app
from server.settings import Settings
from tests.conftest import SiteCredentials
from tests.support.dashboard import CSRF_RE, PASSWORD, add_moderator, csrf_token, dead_callback, held_comment, sign_in
from tests.support.signing import comment_event, encode, signed_headers

Sessions = sessionmaker[Session]
COOKIE = "moderation_session"


@pytest.fixture
def people(sessions: Sessions) -> dict[str, int]:
    with sessions.begin() as session:
        return {
            "mod": add_moderator(session, "mod@example.org"),
            "admin": add_moderator(session, "admin@example.org", "admin"),
            "target": add_moderator(session, "target@example.org"),  # what admin actions are tried on
        }


@pytest.fixture
def open_app(settings: Settings) -> Iterator[Flask]:
    """The app with a login limit out of the way: these tests sign in many times from one address."""
    app = create_app(settings.model_copy(update={"login_rate_limit": "1000/minute"}))
    app.config["TESTING"] = True
    yield app
    app.extensions["moderation"].sessions.kw["bind"].dispose()


def session_cookie(client: FlaskClient) -> str | None:
    cookie = client.get_cookie(COOKIE)
    return cookie.value if cookie is not None else None


def copy_of(app: Flask, cookie: str, user_agent: str | None = None) -> FlaskClient:
    """Another browser holding the same cookie (a thief, or an attacker who planted it)."""
    client = app.test_client()
    client.set_cookie(COOKIE, cookie)
    if user_agent is not None:
        client.environ_base["HTTP_USER_AGENT"] = user_agent
    return client


def signed_in(response: TestResponse) -> bool:
    return response.status_code == 200


def goes_to_sign_in(response: TestResponse) -> bool:
    return response.status_code == 302 and "/dashboard/login" in response.headers["Location"]


def sign_out(client: FlaskClient) -> None:
    token = csrf_token(client, "/dashboard/queue")
    assert client.post("/dashboard/logout", data={"csrf_token": token}).status_code == 302


# --- sessions -------------------------------------------------------------------------------------


def test_cookie_flags_and_session_protection(open_app: Flask, settings: Settings, people: dict[str, int]) -> None:
    assert open_app.login_manager.session_protection == "strong"  # type: ignore[attr-defined]
    response = sign_in(open_app.test_client(), "mod@example.org")
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{COOKIE}="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie

    secure = create_app(settings.model_copy(update={"session_cookie_secure": True}))
    try:
        response = sign_in(secure.test_client(), "mod@example.org")
        cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{COOKIE}="))
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    finally:
        secure.extensions["moderation"].sessions.kw["bind"].dispose()


def test_a_session_planted_before_sign_in_is_not_the_session_after(open_app: Flask, people: dict[str, int]) -> None:
    attacker = open_app.test_client()
    attacker_token = csrf_token(attacker)  # the attacker's own session, with a CSRF token the attacker knows
    planted = session_cookie(attacker)
    assert planted

    victim = copy_of(open_app, planted)
    assert sign_in(victim, "mod@example.org").status_code == 302
    after = session_cookie(victim)
    assert after and after != planted
    assert signed_in(victim.get("/dashboard/queue"))

    # The planted cookie did not become a signed-in session...
    assert goes_to_sign_in(attacker.get("/dashboard/queue"))
    # ...and the CSRF token the attacker knew does not carry over into the victim's session.
    refused = victim.post("/dashboard/logout", data={"csrf_token": attacker_token})
    assert refused.status_code == 400 and "CSRF" in refused.get_data(as_text=True)
    assert signed_in(victim.get("/dashboard/queue"))


def test_sign_out_ends_the_session_for_good_even_for_a_copied_cookie(open_app: Flask, people: dict[str, int]) -> None:
    browser = open_app.test_client()
    assert sign_in(browser, "mod@example.org").status_code == 302
    copied = session_cookie(browser)
    assert copied
    thief = copy_of(open_app, copied)
    assert signed_in(thief.get("/dashboard/queue"))  # a copied signed cookie works: this is what sign-out must end

    sign_out(browser)
    assert goes_to_sign_in(browser.get("/dashboard/queue"))
    assert goes_to_sign_in(thief.get("/dashboard/queue"))

    # Signing in again makes a new session; the copy from before stays dead.
    assert sign_in(browser, "mod@example.org").status_code == 302
    assert signed_in(browser.get("/dashboard/queue"))
    assert goes_to_sign_in(copy_of(open_app, copied).get("/dashboard/queue"))


def test_a_copied_cookie_from_another_browser_is_refused(open_app: Flask, people: dict[str, int]) -> None:
    browser = open_app.test_client()
    assert sign_in(browser, "mod@example.org").status_code == 302
    copied = session_cookie(browser)
    assert copied
    # Strong session protection: a different user agent with the same cookie is signed out.
    assert goes_to_sign_in(copy_of(open_app, copied, user_agent="Mozilla/5.0 (thief)").get("/dashboard/queue"))


def test_deactivating_a_moderator_ends_their_sessions(
    open_app: Flask, sessions: Sessions, people: dict[str, int]
) -> None:
    moderator = open_app.test_client()
    assert sign_in(moderator, "target@example.org").status_code == 302
    copied = session_cookie(moderator)
    admin = open_app.test_client()
    assert sign_in(admin, "admin@example.org").status_code == 302

    token = csrf_token(admin, "/dashboard/admin/moderators")
    update = f"/dashboard/admin/moderators/{people['target']}"
    assert admin.post(update, data={"csrf_token": token, "active": "0"}).status_code == 302
    assert goes_to_sign_in(moderator.get("/dashboard/queue"))

    # Activated again, the account's old sessions stay ended: only a new sign-in works.
    assert admin.post(update, data={"csrf_token": token, "active": "1"}).status_code == 302
    assert copied and goes_to_sign_in(copy_of(open_app, copied).get("/dashboard/queue"))
    assert sign_in(moderator, "target@example.org").status_code == 302
    assert signed_in(moderator.get("/dashboard/queue"))

    # The command line deactivates by setting the flag on the row: that ends sessions the same way.
    with sessions.begin() as session:
        session.get(Moderator, people["target"]).is_active = False
    assert goes_to_sign_in(moderator.get("/dashboard/queue"))


def test_a_new_password_ends_existing_sessions(open_app: Flask, settings: Settings, people: dict[str, int]) -> None:
    moderator = open_app.test_client()
    assert sign_in(moderator, "mod@example.org").status_code == 302
    other_device = open_app.test_client()
    assert sign_in(other_device, "mod@example.org").status_code == 302
    assert signed_in(moderator.get("/dashboard/queue")) and signed_in(other_device.get("/dashboard/queue"))

    changed = CliRunner().invoke(
        main,
        ["moderators", "set-password", "MOD@example.org"],
        input="a brand new passphrase\n",
        env={"DATABASE_URL": settings.database_url or "", "VAR_DIR": str(settings.var_dir), "LOG_FORMAT": "text"},
    )
    assert changed.exit_code == 0, changed.output
    assert "open sessions have ended" in changed.output
    assert goes_to_sign_in(moderator.get("/dashboard/queue"))
    assert goes_to_sign_in(other_device.get("/dashboard/queue"))
    assert sign_in(moderator, "mod@example.org", PASSWORD).status_code == 401
    assert sign_in(moderator, "mod@example.org", "a brand new passphrase").status_code == 302


def test_only_the_accounts_current_session_token_is_accepted(
    open_app: Flask, sessions: Sessions, people: dict[str, int]
) -> None:
    with sessions() as session:
        token = session.get(Moderator, people["mod"]).session_token
    with open_app.test_request_context(environ_base=open_app.test_client().environ_base):
        # What Flask-Login's strong protection expects for the test client's address and user agent.
        identifier = flask_login_manager._create_identifier()

    def with_user_id(user_id: str) -> TestResponse:
        client = open_app.test_client()
        with client.session_transaction() as session:
            session.update({"_user_id": user_id, "_fresh": True, "_id": identifier})
        return client.get("/dashboard/queue")

    assert signed_in(with_user_id(f"{people['mod']}:{token}"))  # the control: a well-formed current session
    assert goes_to_sign_in(with_user_id(str(people["mod"])))  # a cookie from before session tokens
    assert goes_to_sign_in(with_user_id(f"{people['mod']}:{token[:-1]}x"))
    assert goes_to_sign_in(with_user_id(f"{people['admin']}:{token}"))  # another account's id with this token


def test_migration_gives_each_existing_moderator_its_own_session_token(empty_database_url: str) -> None:
    upgrade_database(empty_database_url, "0002")
    engine = create_db_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            for email in ("a@example.org", "b@example.org"):
                connection.execute(
                    text(
                        "INSERT INTO moderators (email, password_hash, role, is_active, created_at) "
                        "VALUES (:email, 'x', 'moderator', true, CURRENT_TIMESTAMP)"
                    ),
                    {"email": email},
                )
        upgrade_database(empty_database_url, "0003")
        with engine.connect() as connection:
            tokens = list(connection.execute(text("SELECT session_token FROM moderators")).scalars())
        assert len(tokens) == 2 and all(len(t) >= 40 for t in tokens) and tokens[0] != tokens[1]
        columns = {c["name"]: c for c in inspect(engine).get_columns("moderators")}
        assert not columns["session_token"]["nullable"]
        downgrade_database(empty_database_url, "0002")
        assert "session_token" not in {c["name"] for c in inspect(engine).get_columns("moderators")}
    finally:
        engine.dispose()


# --- a session that ends while a page is open ---------------------------------------------------------

JSON = {"Accept": "application/json"}
XHR = {"X-Requested-With": "XMLHttpRequest"}
QUEUE_PAGE = "/dashboard/queue?sort=risk"
SIGN_IN_AGAIN = "/dashboard/login?next=%2Fdashboard%2Fqueue%3Fsort%3Drisk"


@pytest.fixture
def held_id(sessions: Sessions, people: dict[str, int]) -> int:
    with sessions.begin() as session:
        site, _secret = create_site(session, "backpain-advisor")
        comment_id, _decision_id = held_comment(session, site, "c-1")
        return comment_id


def approve_from_the_queue(client: FlaskClient, comment_id: int, token: str, headers: dict[str, str]) -> TestResponse:
    """What the queue page sends when `a` is pressed: its form's CSRF token, the page as the Referer."""
    return client.post(
        f"/dashboard/comments/{comment_id}/act",
        data={"csrf_token": token, "action": "approve"},
        headers={"Referer": f"http://localhost{QUEUE_PAGE}", **headers},
    )


def signed_out_answer(response: TestResponse) -> bool:
    return response.status_code == 401 and response.get_json() == {
        "error": "signed_out",
        "message": "Your session has ended: sign in again.",
        "login_url": SIGN_IN_AGAIN,
    }


def status_of(sessions: Sessions, comment_id: int) -> str:
    with sessions() as session:
        return session.get(Comment, comment_id).status


def test_an_action_sent_after_sign_out_in_another_tab_is_told_to_sign_in_again(
    open_app: Flask, sessions: Sessions, held_id: int
) -> None:
    browser = open_app.test_client()
    assert sign_in(browser, "mod@example.org").status_code == 302
    token = csrf_token(browser, QUEUE_PAGE)  # the queue open in one tab...
    sign_out(browser)  # ...sign-out in another, which then shows the sign-in page (a CSRF token of its own)
    csrf_token(browser)

    # The page's script: a 401 it can explain, not the sign-in page's 200 (nor "the CSRF tokens do not match").
    assert signed_out_answer(approve_from_the_queue(browser, held_id, token, JSON))
    assert signed_out_answer(approve_from_the_queue(browser, held_id, token, XHR))
    # The same form sent by the browser itself goes to sign in, and back to the page it was sent from.
    answer = approve_from_the_queue(browser, held_id, token, {})
    assert answer.status_code == 302 and answer.headers["Location"] == SIGN_IN_AGAIN
    assert status_of(sessions, held_id) == "held"  # nothing was recorded

    token = csrf_token(browser)
    back = browser.post(SIGN_IN_AGAIN, data={"email": "mod@example.org", "password": PASSWORD, "csrf_token": token})
    assert back.headers["Location"] == QUEUE_PAGE


def test_an_action_after_the_account_was_deactivated_is_told_to_sign_in_again(
    open_app: Flask, sessions: Sessions, people: dict[str, int], held_id: int
) -> None:
    browser = open_app.test_client()
    assert sign_in(browser, "mod@example.org").status_code == 302
    token = csrf_token(browser, QUEUE_PAGE)
    with sessions.begin() as session:
        session.get(Moderator, people["mod"]).is_active = False

    assert signed_out_answer(approve_from_the_queue(browser, held_id, token, JSON))
    bulk = browser.post(
        "/dashboard/bulk",
        data={"csrf_token": token, "action": "approve", "ids": str(held_id)},
        headers={"Referer": f"http://localhost{QUEUE_PAGE}", **XHR},
    )
    assert signed_out_answer(bulk)
    assert goes_to_sign_in(approve_from_the_queue(browser, held_id, token, {}))
    assert status_of(sessions, held_id) == "held"


def test_a_csrf_failure_with_a_live_session_is_still_a_csrf_refusal(open_app: Flask, held_id: int) -> None:
    browser = open_app.test_client()
    assert sign_in(browser, "mod@example.org").status_code == 302
    csrf_token(browser, QUEUE_PAGE)
    refused = approve_from_the_queue(browser, held_id, "not-the-token", JSON)
    assert refused.status_code == 400
    assert refused.get_json() == {"ok": False, "message": "refused: The CSRF token is invalid."}
    refused = approve_from_the_queue(browser, held_id, "not-the-token", {})
    assert refused.status_code == 400 and "CSRF" in refused.get_data(as_text=True)


@pytest.mark.parametrize(
    ("target", "lands_on"),
    [
        ("/dashboard/bulk", "/dashboard/queue"),  # POST-only: sent by a form after the session ended
        ("/dashboard/comments/1/act", "/dashboard/queue"),
        ("/dashboard/no-such-page", "/dashboard/queue"),
        ("/dashboard/queue?queue=all&sort=risk", "/dashboard/queue?queue=all&sort=risk"),
        ("/dashboard/comments/1", "/dashboard/comments/1"),
        ("/dashboard/admin/moderators", "/dashboard/admin/moderators"),
    ],
)
def test_sign_in_goes_back_only_to_a_page_that_answers_get(
    open_app: Flask, people: dict[str, int], target: str, lands_on: str
) -> None:
    browser = open_app.test_client()
    token = csrf_token(browser)
    response = browser.post(
        "/dashboard/login",
        query_string={"next": target},
        data={"email": "admin@example.org", "password": PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 302 and response.headers["Location"] == lands_on


def test_the_sign_out_address_typed_in_goes_on_to_a_page(open_app: Flask, people: dict[str, int]) -> None:
    browser = open_app.test_client()
    answer = browser.get("/dashboard/logout")
    assert answer.status_code == 302 and answer.headers["Location"] == "/dashboard/login"

    assert sign_in(browser, "mod@example.org").status_code == 302
    answer = browser.get("/dashboard/logout")
    assert answer.status_code == 302 and answer.headers["Location"] == "/dashboard/queue"
    # Only the button signs out (a POST with a CSRF token): a link on another site cannot.
    assert "To sign out, use Sign out" in browser.get("/dashboard/queue").get_data(as_text=True)


class Clock:
    """Shifts the clock Flask's signed session cookie is stamped and checked with."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hours = 0.0
        monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda _signer: int(time.time() + self.hours * 3600))

    def advance(self, hours: float) -> None:
        self.hours += hours


@pytest.mark.parametrize("limit", [None, 2.0])  # None: the default, 12 hours
def test_a_session_ends_after_dashboard_session_hours_without_a_request(
    settings: Settings, people: dict[str, int], monkeypatch: pytest.MonkeyPatch, limit: float | None
) -> None:
    hours = limit or 12.0
    update: dict[str, Any] = {"login_rate_limit": "1000/minute"}
    if limit is not None:
        update["dashboard_session_hours"] = limit
    app = create_app(settings.model_copy(update=update))
    clock = Clock(monkeypatch)
    try:
        browser = app.test_client()
        assert sign_in(browser, "mod@example.org").status_code == 302
        copied = session_cookie(browser)
        assert copied

        clock.advance(hours * 0.9)
        assert signed_in(browser.get("/dashboard/queue"))  # in use: each request renews the session
        clock.advance(hours * 0.9)
        assert signed_in(browser.get("/dashboard/queue"))
        assert goes_to_sign_in(copy_of(app, copied).get("/dashboard/queue"))  # a copy left unused has ended

        clock.advance(hours * 1.1)
        assert goes_to_sign_in(browser.get("/dashboard/queue"))  # idle too long
        assert sign_in(browser, "mod@example.org").status_code == 302
        assert signed_in(browser.get("/dashboard/queue"))
    finally:
        app.extensions["moderation"].sessions.kw["bind"].dispose()


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_session_time_out_that_is_not_positive_stops_the_start(tmp_path: Path, value: str) -> None:
    result = CliRunner().invoke(
        main,
        ["sites", "list"],
        env={"VAR_DIR": str(tmp_path), "DATABASE_URL": "", "LOG_FORMAT": "text", "DASHBOARD_SESSION_HOURS": value},
    )
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line == "Error: invalid setting DASHBOARD_SESSION_HOURS: Input should be greater than 0"


# --- every route, by role -------------------------------------------------------------------------

PUBLIC = "public"  # anyone: health, metrics, the OpenAPI document, static files
SIGN_IN = "sign-in"  # the sign-in form itself
MODERATOR = "moderator"  # signed in, any role
ADMIN = "admin"  # signed in as admin
SIGNED = "signed"  # machines: a Standard Webhooks signature, whatever dashboard session comes along


@dataclass(frozen=True)
class Access:
    who: str
    ok: int = 200  # what a permitted GET answers
    signs_out: bool = False  # a permitted POST ends the session (checked, then done last)
    query: tuple[tuple[str, str], ...] = ()


# Every rule of the app must be here: a new route without an entry fails the test until someone decides
# who may call it.
ROUTES: dict[str, Access] = {
    "static": Access(PUBLIC, ok=404),  # Flask's own static route: the app ships no files there
    "dashboard.static": Access(PUBLIC),
    "front_door": Access(PUBLIC, ok=302),  # the bare address: a redirect to the dashboard, which then asks
    "health.healthz": Access(PUBLIC),
    "health.readyz": Access(PUBLIC),
    "metrics.metrics": Access(PUBLIC),
    "webhooks.serve_openapi": Access(PUBLIC),
    "webhooks.receive_comment": Access(SIGNED),
    "webhooks.get_comment": Access(SIGNED, query=(("site", "backpain-advisor"),)),
    "webhooks.list_comments": Access(SIGNED, query=(("site", "backpain-advisor"),)),
    "webhooks.erase_author_data": Access(SIGNED, query=(("site", "backpain-advisor"),)),
    "dashboard.login": Access(SIGN_IN),
    "dashboard.logout": Access(MODERATOR, signs_out=True),
    "dashboard.logout_typed": Access(PUBLIC, ok=302),  # the address typed: on to the queue or sign-in
    "dashboard.index": Access(MODERATOR, ok=302),
    "dashboard.queue": Access(MODERATOR),
    "dashboard.comment": Access(MODERATOR),
    "dashboard.act_on_comment": Access(MODERATOR),
    "dashboard.bulk": Access(MODERATOR),
    "dashboard.overview": Access(MODERATOR),
    "dashboard.overview_json": Access(MODERATOR),
    "dashboard.sites": Access(ADMIN),
    "dashboard.sites_add": Access(ADMIN),
    "dashboard.site_callback": Access(ADMIN),
    "dashboard.site_rotate": Access(ADMIN),
    "dashboard.site_pause": Access(ADMIN),
    "dashboard.site_resume": Access(ADMIN),
    "dashboard.thresholds": Access(ADMIN),
    "dashboard.thresholds_preview": Access(ADMIN),
    "dashboard.thresholds_save": Access(ADMIN),
    "dashboard.lists": Access(ADMIN),
    "dashboard.lists_add": Access(ADMIN),
    "dashboard.lists_delete": Access(ADMIN),
    "dashboard.moderators": Access(ADMIN),
    "dashboard.moderators_add": Access(ADMIN),
    "dashboard.moderators_update": Access(ADMIN),
    "dashboard.dead_letters": Access(ADMIN),
    "dashboard.replay": Access(ADMIN),
    "dashboard.models": Access(ADMIN),
    "dashboard.models_activate": Access(ADMIN),
}
ROLES = ("anonymous", "moderator", "admin")


@pytest.fixture
def route_arguments(sessions: Sessions, people: dict[str, int]) -> dict[str, Any]:
    """Real rows for every URL variable, so a permitted request reaches the view's own logic."""
    with sessions.begin() as session:
        site, _secret = create_site(session, "backpain-advisor", "http://127.0.0.1:9/moderation-callback")
        comment_id, decision_id = held_comment(session, site, "c-1")
        delivery_id = dead_callback(session, site.id, comment_id, decision_id)
        entry = add_entry(session, "block", "word", "viagra", None, people["admin"], datetime.now(UTC))
        return {
            "site_id": site.id,
            "comment_id": comment_id,
            "delivery_id": delivery_id,
            "entry_id": entry.id,
            "moderator_id": people["target"],
            "version": "no-such-version",
            "filename": "dashboard.css",
        }


@dataclass
class Caller:
    role: str
    client: FlaskClient

    def token(self) -> str:
        page = self.client.get("/dashboard/login" if self.role == "anonymous" else "/dashboard/queue")
        match = CSRF_RE.search(page.get_data(as_text=True))
        assert match, f"no CSRF token for {self.role}"
        return match.group(1)


def callers(app: Flask) -> list[Caller]:
    result = [Caller("anonymous", app.test_client())]
    for role, email in (("moderator", "mod@example.org"), ("admin", "admin@example.org")):
        client = app.test_client()
        assert sign_in(client, email).status_code == 302
        result.append(Caller(role, client))
    return result


def expected_get(access: Access, role: str) -> int | str:
    """A status code, or "sign-in" for a redirect to the sign-in page."""
    if access.who == PUBLIC:
        return access.ok
    if access.who == SIGNED:
        return 401
    if access.who == SIGN_IN:
        return 200 if role == "anonymous" else 302
    if role == "anonymous":
        return "sign-in"
    if access.who == ADMIN and role == "moderator":
        return 403
    return access.ok


def check(response: TestResponse, expected: int | str, what: str) -> None:
    if expected == "sign-in":
        assert goes_to_sign_in(response), f"{what}: {response.status_code}, not sent to sign in"
    elif expected == "allowed":
        # Past authentication and authorization: whatever the view makes of an empty form, not a refusal.
        body = response.get_data(as_text=True)
        assert response.status_code not in (401, 403), f"{what}: refused with {response.status_code}"
        assert response.status_code < 500, f"{what}: {response.status_code}"
        assert not goes_to_sign_in(response), f"{what}: sent to sign in"
        assert "CSRF" not in body, f"{what}: refused by the CSRF check with a token"
    else:
        assert response.status_code == expected, f"{what}: {response.status_code}, expected {expected}"


def test_every_route_answers_each_role_as_expected(
    open_app: Flask, route_arguments: dict[str, Any], people: dict[str, int]
) -> None:
    rules = list(open_app.url_map.iter_rules())
    unclassified = sorted({rule.endpoint for rule in rules} - set(ROUTES))
    assert not unclassified, f"routes with no access rule in ROUTES: {unclassified}"
    stale = sorted(set(ROUTES) - {rule.endpoint for rule in rules})
    assert not stale, f"ROUTES names routes the app no longer has: {stale}"

    checked: set[tuple[str, str]] = set()
    sign_outs = []
    for caller in callers(open_app):
        for rule in rules:
            access = ROUTES[rule.endpoint]
            with open_app.test_request_context():
                path = url_for(rule.endpoint, **{name: route_arguments[name] for name in rule.arguments})
            for method in sorted(rule.methods or ()):
                what = f"{caller.role} {method} {path}"
                if access.signs_out and method == "POST":
                    sign_outs.append((caller, access, path))  # last: it ends the caller's session
                    checked.add((rule.endpoint, method))
                    continue
                exercise(caller, access, path, method, list(rule.methods or ()), what)
                checked.add((rule.endpoint, method))
    for caller, access, path in sign_outs:
        exercise(caller, access, path, "POST", ["POST", "OPTIONS"], f"{caller.role} POST {path}")
    every_method = {(rule.endpoint, method) for rule in rules for method in rule.methods or ()}
    assert checked == every_method


def exercise(caller: Caller, access: Access, path: str, method: str, allowed: list[str], what: str) -> None:
    client, role = caller.client, caller.role
    query = dict(access.query)
    if method == "OPTIONS":  # answered by Flask itself, before any view: only the list of methods
        response = client.options(path, query_string=query)
        assert response.status_code == 200 and not response.get_data(), what
        assert set(allowed) <= set(response.headers["Allow"].split(", ")), what
        return
    if method in ("GET", "HEAD"):
        response = client.open(path, method=method, query_string=query)
        with response:  # closes static files
            check(response, expected_get(access, role), what)
            if method == "HEAD":
                assert not response.get_data(), what
        return
    assert method == "POST", f"{what}: no expectation for {method}"
    if access.who == SIGNED:
        # The CSRF check does not apply (a signature does); a dashboard session, even an admin's, does not help.
        body = encode(comment_event("backpain-advisor", "c-matrix"))
        response = client.post(path, data=body, content_type="application/json", query_string=query)
        check(response, 401, f"{what} unsigned")
        return
    refused = client.post(path, data={}, query_string=query)
    if role == "anonymous" and access.who in (MODERATOR, ADMIN):
        # No session to protect: what such a form needs is a sign-in (as after sign-out in another tab).
        check(refused, "sign-in", f"{what} without a CSRF token")
    else:
        check(refused, 400, f"{what} without a CSRF token")
        assert "CSRF" in refused.get_data(as_text=True), what
    response = client.post(path, data={"csrf_token": caller.token()}, query_string=query)
    if access.who == SIGN_IN:
        check(response, 401 if role == "anonymous" else 302, f"{what} with a token")
    elif role == "anonymous":
        check(response, "sign-in", f"{what} with a token")
    elif access.who == ADMIN and role == "moderator":
        check(response, 403, f"{what} with a token")
    elif access.signs_out:
        check(response, "sign-in", f"{what} with a token")
        assert goes_to_sign_in(client.get("/dashboard/queue")), f"{what}: still signed in"
    else:
        check(response, "allowed", f"{what} with a token")


def test_a_signed_webhook_is_accepted_whatever_the_session(open_app: Flask, site: SiteCredentials) -> None:
    """The matrix shows unsigned machine calls are refused; this is the control that a signed one passes."""
    client = open_app.test_client()
    body = encode(comment_event(site.name, "c-control"))
    response = client.post("/webhooks/comments", data=body, headers=signed_headers(site.secret, body))
    assert response.status_code == 202


@pytest.mark.parametrize("path", ["/dashboard/nosuchpage", "/dashboard/comments/abc", "/dashboard/admin/sites/abc"])
def test_an_address_under_the_dashboard_matching_no_route_shows_a_signed_out_visitor_only_the_error_page(
    open_app: Flask, people: dict[str, int], path: str
) -> None:
    """No route means no login_required: the error page is all a visitor gets, under the dashboard's headers."""
    response = open_app.test_client().get(path)
    page = response.get_data(as_text=True)
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "No such page or comment." in page
    assert 'aria-label="Main"' not in page and "Sign out" not in page and "@example.org" not in page
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"


# --- intake rate limits: counted in Redis ------------------------------------------


def post_comment(client: FlaskClient, site: SiteCredentials, number: int, ip: str = "203.0.113.9") -> TestResponse:
    event = comment_event(site.name, f"c-limit-{number}")
    event["data"]["author"]["ip"] = ip
    body = encode(event)
    return client.post("/webhooks/comments", data=body, headers=signed_headers(site.secret, body))


def test_intake_limits_are_counted_in_redis_and_shared_by_every_web_process(
    settings: Settings, site: SiteCredentials, redis_url: str
) -> None:
    limited = settings.model_copy(update={"rate_limit_per_site": "3/minute", "rate_limit_per_author_ip": "100/minute"})
    first, second = create_app(limited), create_app(limited)  # two web processes, one Redis
    try:
        answers = [
            post_comment(app.test_client(), site, n, ip=f"198.51.100.{n}")
            for n, app in enumerate([first, second, first, second])
        ]
        assert [a.status_code for a in answers] == [202, 202, 202, 429]
        assert answers[3].get_json()["error"] == "rate_limited"
        assert "site" in answers[3].get_json()["message"]
        assert 1 <= int(answers[3].headers["Retry-After"]) <= 60
        keys = [key.decode() for key in redis.Redis.from_url(redis_url).keys("*intake*")]
        assert any(site.name in key for key in keys), keys
    finally:
        for app in (first, second):
            app.extensions["moderation"].sessions.kw["bind"].dispose()


def test_unsigned_requests_do_not_use_up_a_sites_quota(settings: Settings, site: SiteCredentials) -> None:
    app = create_app(settings.model_copy(update={"rate_limit_per_site": "2/minute"}))
    try:
        client = app.test_client()
        for number in range(5):
            forged = encode(comment_event(site.name, f"c-forged-{number}"))
            headers = signed_headers("whsec_" + "A" * 43, forged)
            assert client.post("/webhooks/comments", data=forged, headers=headers).status_code == 401
        assert [post_comment(client, site, n).status_code for n in range(3)] == [202, 202, 429]
    finally:
        app.extensions["moderation"].sessions.kw["bind"].dispose()


def test_with_redis_unreachable_intake_answers_and_limits_fall_back_to_memory(
    settings: Settings, site: SiteCredentials
) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0", "rate_limit_per_author_ip": "2/minute"})
    app = create_app(down)
    try:
        client = app.test_client()
        codes = [post_comment(client, site, n).status_code for n in range(3)]
        assert codes == [202, 202, 429]  # counted in this process's memory while Redis is away
        assert post_comment(client, site, 9, ip="198.51.100.7").status_code == 202
    finally:
        app.extensions["moderation"].sessions.kw["bind"].dispose()


def test_a_refused_form_links_back_to_the_page_it_was_sent_from(open_app: Flask, people: dict[str, int]) -> None:
    """The refusal once said "Reload the page": reloading it sends the stale form again. It now links to the
    form's own page (named by the Referer, when it is a dashboard page of this host)."""
    browser = open_app.test_client()
    assert sign_in(browser, "mod@example.org").status_code == 302
    came_from = "http://localhost/dashboard/queue?queue=rejected&text=back"
    refused = browser.post("/dashboard/logout", data={"csrf_token": "stale"}, headers={"Referer": came_from})
    page = refused.get_data(as_text=True)
    assert refused.status_code == 400 and "Reload the page" not in page
    assert '<a href="/dashboard/queue?queue=rejected&amp;text=back">Back to that page</a>' in page
    other_host, post_only, not_dashboard = "http://evil.example/dashboard", "/dashboard/bulk", "/metrics"
    for elsewhere in (other_host, f"http://localhost{post_only}", f"http://localhost{not_dashboard}", ""):
        refused = browser.post("/dashboard/logout", data={"csrf_token": "stale"}, headers={"Referer": elsewhere})
        assert '<a href="/dashboard/queue">Back to the queue</a>' in refused.get_data(as_text=True), elsewhere


def test_a_nul_typed_anywhere_is_answered_as_any_mistake_not_with_a_500(
    open_app: Flask, people: dict[str, int], sessions: Sessions
) -> None:
    """PostgreSQL text cannot hold NUL: in the sign-in address, a queue filter or a note it failed the request."""
    browser = open_app.test_client()
    token = csrf_token(browser)
    refused = browser.post(
        "/dashboard/login", data={"email": "mod\x00@example.org", "password": PASSWORD, "csrf_token": token}
    )
    assert refused.status_code == 401 and "Wrong e-mail or password" in refused.get_data(as_text=True)
    assert sign_in(browser, "mod@example.org").status_code == 302
    with sessions.begin() as session:
        site, _ = create_site(session, "nul-site")
        held, decision = held_comment(session, site, "c-1", "Massage helped.")
    for query in ("text=a%00b", "author=a%00b", "article=a%00b", "site=a%00b"):
        assert browser.get(f"/dashboard/queue?{query}").status_code == 200
    token = csrf_token(browser, "/dashboard/queue")
    form = {"csrf_token": token, "action": "reject", "expected_decision_id": str(decision), "reason": "other"}
    answer = browser.post(
        f"/dashboard/comments/{held}/act", data={**form, "note": "spam\x00"}, headers={"Accept": "application/json"}
    )
    assert answer.status_code == 400 and "NUL" in answer.get_json()["message"]
    with sessions() as session:
        assert session.get_one(Comment, held).status == "held"


def test_a_sign_in_link_whose_next_page_holds_a_line_break_goes_to_the_queue(
    open_app: Flask, people: dict[str, int]
) -> None:
    """Werkzeug refuses a header with CR or LF in it: the redirect after a right password was a 500."""
    browser = open_app.test_client()
    browser.get("/dashboard/login?next=/dashboard/queue%3Fa%0d%0aX-Injected:%201")
    token = csrf_token(browser)
    signed = browser.post(
        "/dashboard/login?next=/dashboard/queue%3Fa%0d%0aX-Injected:%201",
        data={"email": "mod@example.org", "password": PASSWORD, "csrf_token": token},
    )
    assert signed.status_code == 302 and signed.headers["Location"] == "/dashboard/queue"
    assert "X-Injected" not in signed.headers


@pytest.mark.parametrize("where", ["act", "bulk"])
def test_an_action_whose_back_field_holds_a_line_break_goes_to_its_usual_page_not_a_500(
    open_app: Flask, sessions: Sessions, people: dict[str, int], where: str
) -> None:
    """An action's `back` (the page to go back to) was checked for its "/dashboard" start only: a CR/LF went
    into the Location header and Werkzeug refused it, a 500 after the verdict was saved. It is now checked as
    a sign-in's next page is (a cold review's test)."""
    with sessions.begin() as session:
        site, _secret = create_site(session, "backpain-advisor")
        comment_id, decision_id = held_comment(session, site, "c-1")
    browser = open_app.test_client()
    assert sign_in(browser, "mod@example.org").status_code == 302
    token = csrf_token(browser, "/dashboard/queue")
    back = "/dashboard/queue\r\nX-Injected: 1"
    if where == "act":
        url, default = f"/dashboard/comments/{comment_id}/act", f"/dashboard/comments/{comment_id}"
        form = {"csrf_token": token, "action": "approve", "expected_decision_id": str(decision_id), "back": back}
    else:
        url, default = "/dashboard/bulk", "/dashboard/queue"
        form = {"csrf_token": token, "action": "approve", "ids": f"{comment_id}:{decision_id}", "back": back}
    answer = browser.post(url, data=form)
    assert answer.status_code == 302 and answer.headers["Location"] == default
    assert "X-Injected" not in answer.headers
    assert status_of(sessions, comment_id) == "approved"
    # A queue page with its filters is still gone back to.
    page = "/dashboard/queue?queue=approved&text=back"
    answer = browser.post(url, data={**form, "back": page})  # refused now (already approved), and back there
    assert answer.status_code == 302 and answer.headers["Location"] == page
