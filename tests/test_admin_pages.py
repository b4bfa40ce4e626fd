"""What an admin changes on the moderators, lists and sites pages (and the forms they refuse), and what that
changes for others, and what the sites and callbacks pages tell of failing callbacks, through the real app's test
client (CSRF on), on SQLite and PostgreSQL."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.entities import CallbackDelivery, Comment, Decision, ListEntry, Moderator, Site
from moderation import callbacks
from moderation.callbacks import RetryPolicy
from moderation.decisions import gather_signals
from moderation.lists import add_entry
from moderation.policy import ALLOW_LISTED_SKIPS
from moderation.reasons import REASON_LABELS
from moderation.sites import create_site
from tests.support.dashboard import add_moderator, csrf_token, held_comment, sign_in
from tests.support.statements import statements_run

MODERATORS = "/dashboard/admin/moderators"
LISTS = "/dashboard/admin/lists"
SITES = "/dashboard/admin/sites"
CALLBACKS = "/dashboard/admin/callbacks"


@pytest.fixture
def people(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions.begin() as session:
        return {
            "admin": add_moderator(session, "admin@example.org", "admin"),
            "mod": add_moderator(session, "mod@example.org"),
        }


@pytest.fixture
def admin(app: Flask, people: dict[str, int]) -> Iterator[FlaskClient]:
    client = app.test_client()
    assert sign_in(client, "admin@example.org").status_code == 302
    yield client


def account(sessions: sessionmaker[Session], moderator_id: int) -> tuple[str, bool]:
    """The account's role and whether it is active, as stored."""
    with sessions() as session:
        moderator = session.get_one(Moderator, moderator_id)
        return moderator.role, moderator.is_active


# A refused form answers this with the page again, as the thresholds page does (tests/test_thresholds_page.py).
REFUSED = 422


def update_account(client: FlaskClient, moderator_id: int, **form: str) -> str:
    """Post the moderators page's form for one account, which it takes; the page it leads back to."""
    token = csrf_token(client, MODERATORS)
    answer = client.post(f"{MODERATORS}/{moderator_id}", data={"csrf_token": token, **form})
    assert answer.status_code == 302 and answer.headers["Location"] == MODERATORS
    return client.get(MODERATORS).get_data(as_text=True)


def refused_update(client: FlaskClient, moderator_id: int, **form: str) -> str:
    """Post the moderators page's form for one account, which it refuses: the page it answers with."""
    token = csrf_token(client, MODERATORS)
    answer = client.post(f"{MODERATORS}/{moderator_id}", data={"csrf_token": token, **form})
    assert answer.status_code == REFUSED, answer.headers.get("Location")
    return answer.get_data(as_text=True)


def refused_add(client: FlaskClient, **form: str) -> str:
    """Post the "Add a moderator" form, which the page refuses: the page it answers with."""
    token = csrf_token(client, MODERATORS)
    answer = client.post(MODERATORS, data={"csrf_token": token, **form})
    assert answer.status_code == REFUSED, answer.headers.get("Location")
    return answer.get_data(as_text=True)


def refused_post(client: FlaskClient, path: str, page: str, **form: str) -> str:
    """Post a form of the admin page at ``page`` to ``path``, which refuses it: the page it answers with."""
    token = csrf_token(client, page)
    answer = client.post(path, data={"csrf_token": token, **form})
    assert answer.status_code == REFUSED, answer.headers.get("Location")
    return answer.get_data(as_text=True)


def add_form(page: str) -> dict[str, str]:
    """What the page's "Add a moderator" form shows: the e-mail's value, the role selected, the password's value."""
    form = re.search(r'<form method="post" action="/dashboard/admin/moderators" class="card">(.*?)</form>', page, re.S)
    assert form is not None, page
    fields = form.group(1)
    email = re.search(r'<input type="email" name="email"[^>]*?(?: value="([^"]*)")?[^>]*>', fields)
    role = re.search(r"<option selected>(\w+)</option>", fields)
    password = re.search(r'<input type="password" name="password"[^>]*?(?: value="([^"]*)")?[^>]*>', fields)
    assert email is not None and password is not None, fields
    return {
        "email": html.unescape(email.group(1) or ""),
        "role": role.group(1) if role else "moderator",  # a select shows its first option when none is selected
        "password": html.unescape(password.group(1) or ""),
    }


def refusal(page: str) -> str:
    """The error the page shows, where the thresholds page shows its own (in the page, not a flash)."""
    shown = re.findall(r'<p class="flash error"[^>]*>([^<]*)</p>', page)
    assert len(shown) == 1, shown
    return html.unescape(shown[0])


def emails(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return sorted(session.scalars(select(Moderator.email)))


# --- moderators --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [{"role": "moderator"}, {"active": "0"}, {"role": "moderator", "active": "0"}],
    ids=["role", "deactivate", "both"],
)
def test_an_admin_can_neither_change_their_own_role_nor_deactivate_themselves(
    admin: FlaskClient, sessions: sessionmaker[Session], people: dict[str, int], form: dict[str, str]
) -> None:
    """The last admin could otherwise lock everyone out of the admin pages."""
    page = refused_update(admin, people["admin"], **form)

    assert refusal(page) == "You cannot change your own role or deactivate yourself."
    assert account(sessions, people["admin"]) == ("admin", True)
    assert admin.get(MODERATORS).status_code == 200  # still signed in, still an admin


def test_an_admin_promotes_a_moderator_to_admin_and_demotes_them_back(
    app: Flask, admin: FlaskClient, sessions: sessionmaker[Session], people: dict[str, int]
) -> None:
    """The change holds from the moderator's next request: their session needs no new sign-in."""
    moderator = app.test_client()
    assert sign_in(moderator, "mod@example.org").status_code == 302
    assert moderator.get(MODERATORS).status_code == 403

    assert "mod@example.org updated." in update_account(admin, people["mod"], role="admin")
    assert account(sessions, people["mod"]) == ("admin", True)
    assert moderator.get(MODERATORS).status_code == 200

    assert "mod@example.org updated." in update_account(admin, people["mod"], role="moderator")
    assert account(sessions, people["mod"]) == ("moderator", True)
    assert moderator.get(MODERATORS).status_code == 403
    assert moderator.get("/dashboard/queue").status_code == 200  # a moderator still


def test_a_moderator_an_admin_deactivates_cannot_sign_in_until_activated_again(
    app: Flask, admin: FlaskClient, sessions: sessionmaker[Session], people: dict[str, int]
) -> None:
    update_account(admin, people["mod"], active="0")
    assert account(sessions, people["mod"]) == ("moderator", False)
    assert sign_in(app.test_client(), "mod@example.org").status_code == 401

    update_account(admin, people["mod"], active="1")
    assert account(sessions, people["mod"]) == ("moderator", True)
    assert sign_in(app.test_client(), "mod@example.org").status_code == 302


@pytest.mark.parametrize(
    "form",
    [{"role": "Admin"}, {"role": "owner"}, {"active": "yes"}, {"role": "admin", "active": "2"}, {}],
    ids=["role-case", "role-unknown", "active-word", "one-of-two-bad", "nothing"],
)
def test_a_moderator_update_naming_no_known_role_or_state_is_refused_not_reported_as_done(
    admin: FlaskClient, sessions: sessionmaker[Session], people: dict[str, int], form: dict[str, str]
) -> None:
    """An unknown role or `active` value was ignored, nothing was changed, and the page still said "<email>
    updated.": a script, or a hand-edited form, was told of a change that never happened (a cold review's test).
    A form with one bad value changes nothing, not even what the other one asked."""
    page = refused_update(admin, people["mod"], **form)

    assert "mod@example.org updated." not in page
    assert refusal(page).startswith("Nothing changed for mod@example.org: "), page
    assert account(sessions, people["mod"]) == ("moderator", True)
    assert "Nothing changed" not in admin.get(MODERATORS).get_data(as_text=True)  # said once, not flashed for later


@pytest.mark.parametrize(
    ("form", "said"),
    [
        (
            {"email": "new@example", "role": "admin", "password": "a long password"},
            "Not added: 'new@example' is not an e-mail address.",
        ),
        (
            {"email": "new@example.org", "role": "admin", "password": "too short"},
            "Not added: the password must have at least 10 characters.",
        ),
        (
            {"email": "Mod@Example.org", "role": "admin", "password": "a long password"},
            "Not added: a moderator mod@example.org already exists.",
        ),
        (
            {"email": "new@example.org", "role": "owner", "password": "a long password"},
            "Not added: role must be moderator or admin.",
        ),
    ],
    ids=["email", "short-password", "duplicate", "unknown-role"],
)
def test_a_new_account_the_page_refuses_answers_422_with_the_form_as_sent_but_the_password(
    admin: FlaskClient, sessions: sessionmaker[Session], form: dict[str, str], said: str
) -> None:
    """It redirected with a flash (302), and the admin typed the address again; the thresholds page answers a
    refusal with itself, the values sent and the error, and 422 (a script can tell it from a success)."""
    page = refused_add(admin, **form)

    assert refusal(page) == said
    shown = add_form(page)
    assert shown["email"] == form["email"]  # as typed, to correct it
    assert shown["role"] == (form["role"] if form["role"] in ("moderator", "admin") else "moderator")
    assert shown["password"] == "" and form["password"] not in page  # never sent back
    assert "mod@example.org" in re.sub(r"<form.*?</form>", "", page, flags=re.S)  # the accounts are listed still
    assert emails(sessions) == ["admin@example.org", "mod@example.org"]
    assert "Not added" not in admin.get(MODERATORS).get_data(as_text=True)  # said once, not flashed for later


def test_an_address_added_meanwhile_by_another_admin_is_refused_in_the_page_s_words(
    admin: FlaskClient, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two admins adding one address at once: the second's check for it passes before the first commits, and
    the unique index refuses the row. The page said the database's error (its statement, parameters and all,
    the new password's hash among them); it says what the check would have said."""
    import moderation.accounts

    monkeypatch.setattr(moderation.accounts, "find_moderator", lambda session, email: None)  # not committed yet
    page = refused_add(admin, email="mod@example.org", role="moderator", password="a long password")

    assert refusal(page) == "Not added: a moderator mod@example.org already exists."
    assert "INSERT" not in page and "argon2" not in page
    assert add_form(page)["email"] == "mod@example.org"
    assert emails(sessions) == ["admin@example.org", "mod@example.org"]


def test_a_new_account_the_page_takes_is_said_after_a_redirect(
    admin: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    token = csrf_token(admin, MODERATORS)
    form = {"csrf_token": token, "email": "New@Example.org", "role": "admin", "password": "a long password"}
    answer = admin.post(MODERATORS, data=form)

    assert answer.status_code == 302 and answer.headers["Location"] == MODERATORS
    page = admin.get(MODERATORS).get_data(as_text=True)
    assert "Moderator added." in page
    assert add_form(page) == {"email": "", "role": "moderator", "password": ""}
    assert emails(sessions) == ["admin@example.org", "mod@example.org", "new@example.org"]


def blocked_terms(sessions: sessionmaker[Session], comment_id: int) -> tuple[str, ...]:
    """What the lists block in the comment, as the next decision of it would see them."""
    with sessions() as session:
        return gather_signals(session, session.get_one(Comment, comment_id), datetime.now(UTC)).blocked_terms


def entry_id(sessions: sessionmaker[Session], value: str) -> int:
    with sessions() as session:
        return session.scalars(select(ListEntry.id).where(ListEntry.value == value)).one()


def test_a_list_entry_an_admin_deletes_no_longer_blocks(
    admin: FlaskClient, sessions: sessionmaker[Session], people: dict[str, int]
) -> None:
    with sessions.begin() as session:
        site, _ = create_site(session, "backpain-advisor")
        comment_id, _ = held_comment(
            session, site, "c-1", "Zorblax cured my back in a day.", author_email="spammer@example.net"
        )
        site_id = site.id
    token = csrf_token(admin, LISTS)
    for field, value in (("author", "spammer@example.net"), ("word", "zorblax")):
        form = {"csrf_token": token, "list_kind": "block", "field": field, "value": value, "site_id": str(site_id)}
        assert admin.post(LISTS, data=form).status_code == 302
    assert blocked_terms(sessions, comment_id) == ("author:spammer@example.net", "zorblax")

    author_entry = entry_id(sessions, "spammer@example.net")
    assert admin.post(f"{LISTS}/{author_entry}/delete", data={"csrf_token": token}).status_code == 302
    assert blocked_terms(sessions, comment_id) == ("zorblax",)
    assert "Removed &#39;spammer@example.net&#39; from the block list." in admin.get(LISTS).get_data(as_text=True)
    assert "spammer@example.net" not in admin.get(LISTS).get_data(
        as_text=True
    )  # the message shown once, the entry gone

    word_entry = entry_id(sessions, "zorblax")
    assert admin.post(f"{LISTS}/{word_entry}/delete", data={"csrf_token": token}).status_code == 302
    assert blocked_terms(sessions, comment_id) == ()
    with sessions() as session:
        assert session.scalars(select(ListEntry)).all() == []
    assert admin.post(f"{LISTS}/{word_entry}/delete", data={"csrf_token": token}).status_code == 404


def test_the_lists_page_names_exactly_the_reasons_an_allow_listed_author_is_spared(admin: FlaskClient) -> None:
    """The page shows the policy's constant, the one decide() applies (tests/test_policy.py), not prose of its own."""
    page = admin.get(LISTS).get_data(as_text=True)
    spared = re.search(r'<ul class="allow-listed-skips">(.*?)</ul>', page, flags=re.DOTALL)
    assert spared is not None, "the lists page does not list what an allow-listed author is spared"
    assert re.findall(r"<li>(.*?)</li>", spared.group(1)) == [REASON_LABELS[reason] for reason in ALLOW_LISTED_SKIPS]


def test_the_lists_page_refuses_to_allow_a_name_and_marks_one_kept_from_before(
    admin: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as session:  # added before names were refused
        session.add(ListEntry(list_kind="allow", field="author", value="dr jane", created_at=datetime.now(UTC)))
    page = refused_post(admin, LISTS, LISTS, list_kind="allow", field="author", value="Dr Jane")
    assert "an allowed author is named by e-mail address" in refusal(page)
    assert 'dr jane <em class="allows-nothing">(not a whole e-mail address: allows nobody' in page
    with sessions() as session:
        assert session.scalars(select(ListEntry.value)).all() == ["dr jane"]


# --- sites: the forms it refuses ----------------------------------------------------------------------


def site_form(page: str) -> dict[str, str]:
    """What the Sites page's "Add a site" form shows: the name's value and the callback URL's."""
    form = re.search(rf'<form method="post" action="{SITES}" class="card">(.*?)</form>', page, re.S)
    assert form is not None, page
    shown = {}
    for name in ("name", "callback_url"):
        field = re.search(rf'<input (?:type="url" )?name="{name}"[^>]*?(?: value="([^"]*)")?>', form.group(1))
        assert field is not None, form.group(1)
        shown[name] = html.unescape(field.group(1) or "")
    return shown


def callback_inputs(page: str) -> dict[str, tuple[str, bool]]:
    """Per site, what the Sites page's callback URL input shows, and whether it is marked as refused."""
    inputs = re.findall(
        r'<input type="url" name="callback_url" value="([^"]*)" size="40" aria-label="Callback URL of ([^"]*)"'
        r'( aria-invalid="true")?>',
        page,
    )
    return {html.unescape(site): (html.unescape(value), bool(invalid)) for value, site, invalid in inputs}


def stored_sites(sessions: sessionmaker[Session]) -> dict[str, str | None]:
    """Per site's name, its callback URL, as stored."""
    with sessions() as session:
        return {site.name: site.callback_url for site in session.scalars(select(Site).order_by(Site.name))}


@pytest.fixture
def two_sites(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions.begin() as session:
        return {
            name: create_site(session, name, f"https://{name}.example/cb")[0].id
            for name in ("backpain-advisor", "other-site")
        }


HOSTILE = '"><script>alert(1)</script>'
STORED = {"backpain-advisor": "https://backpain-advisor.example/cb", "other-site": "https://other-site.example/cb"}


@pytest.mark.parametrize(
    ("form", "said"),
    [
        (
            {"name": "Backpain Advisor", "callback_url": "https://site.example/cb"},
            "Not added: site name must be 1-100 lower-case letters, digits, '.', '_' or '-'.",
        ),
        (
            {"name": "new-site", "callback_url": "ftp://site.example/cb"},
            "Not added: callback URL must be an absolute http(s) URL, got 'ftp://site.example/cb'.",
        ),
        (
            {"name": "new-site", "callback_url": "http://169.254.169.254/latest/meta-data"},
            "Not added: callback URL must not point at a link-local, unspecified or cloud metadata address, got "
            "'http://169.254.169.254/latest/meta-data'.",
        ),
        (
            {"name": "backpain-advisor", "callback_url": "https://new.example/cb"},
            "Not added: a site named 'backpain-advisor' already exists.",
        ),
        (
            {"name": HOSTILE, "callback_url": f"javascript:{HOSTILE}"},
            "Not added: site name must be 1-100 lower-case letters, digits, '.', '_' or '-'.",
        ),
    ],
    ids=["name", "callback-url", "metadata-address", "duplicate", "hostile"],
)
def test_a_new_site_the_page_refuses_answers_422_with_the_form_as_sent(
    admin: FlaskClient, sessions: sessionmaker[Session], two_sites: dict[str, int], form: dict[str, str], said: str
) -> None:
    """It redirected with a flash (302), and the admin typed the name and URL again; the page answers as the
    Moderators and thresholds pages answer a refusal: itself, the error and what was sent, and 422."""
    page = refused_post(admin, SITES, SITES, **form)

    assert refusal(page) == said
    assert site_form(page) == form  # as typed, to correct it
    assert "<script>" not in page  # a hostile name or URL is shown as text
    assert callback_inputs(page) == {name: (url, False) for name, url in STORED.items()}  # the sites listed still
    assert stored_sites(sessions) == STORED
    assert "Not added" not in admin.get(SITES).get_data(as_text=True)  # said once, not flashed for later


def test_what_a_refused_new_site_echoes_is_cut_at_the_columns_lengths(
    admin: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    """A name or URL sent at any length (a script, an edited form) is echoed at most as long as it can be stored,
    and the error does not quote an over-long URL either."""
    url = "https://site.example/" + "a" * 5000
    page = refused_post(admin, SITES, SITES, name="n" * 150, callback_url=url)
    assert refusal(page) == "Not added: site name must be 1-100 lower-case letters, digits, '.', '_' or '-'."
    assert site_form(page) == {"name": "n" * 100, "callback_url": url[:2000]}

    page = refused_post(admin, SITES, SITES, name="new-site", callback_url=url)
    assert refusal(page) == f"Not added: callback URL must have at most 2000 characters, got {len(url)}."
    assert site_form(page) == {"name": "new-site", "callback_url": url[:2000]}
    assert stored_sites(sessions) == {}


def test_a_site_added_meanwhile_by_another_admin_is_refused_in_the_page_s_words(
    admin: FlaskClient, sessions: sessionmaker[Session], two_sites: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two admins adding one site at once: the second's check for its name passes before the first commits, and
    the unique index refuses the row. The page said the database's error (its statement); it says what the check
    would have said."""
    import moderation.sites

    monkeypatch.setattr(moderation.sites, "get_site", lambda session, name: None)  # not committed yet
    form = {"name": "backpain-advisor", "callback_url": "https://new.example/cb"}
    page = refused_post(admin, SITES, SITES, **form)

    assert refusal(page) == "Not added: a site named 'backpain-advisor' already exists."
    assert "INSERT" not in page and "whsec_" not in page
    assert site_form(page) == form
    assert stored_sites(sessions) == STORED


def test_a_new_site_the_page_takes_shows_its_secret_once(admin: FlaskClient, sessions: sessionmaker[Session]) -> None:
    token = csrf_token(admin, SITES)
    answer = admin.post(SITES, data={"csrf_token": token, "name": "new-site", "callback_url": "https://new.example/cb"})

    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    assert "whsec_" in answer.get_data(as_text=True)
    assert stored_sites(sessions) == {"new-site": "https://new.example/cb"}
    assert site_form(admin.get(SITES).get_data(as_text=True)) == {"name": "", "callback_url": ""}


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (
            "ftp://backpain-advisor.example/cb",
            "callback URL must be an absolute http(s) URL, got 'ftp://backpain-advisor.example/cb'",
        ),
        (
            "http://169.254.169.254/latest/meta-data",
            "callback URL must not point at a link-local, unspecified or cloud metadata address, got "
            "'http://169.254.169.254/latest/meta-data'",
        ),
        (f"javascript:{HOSTILE}", f"callback URL must be an absolute http(s) URL, got 'javascript:{HOSTILE}'"),
    ],
    ids=["ftp", "metadata-address", "hostile"],
)
def test_a_callback_url_the_page_refuses_answers_422_with_the_url_as_typed_in_that_site_s_input(
    admin: FlaskClient, sessions: sessionmaker[Session], two_sites: dict[str, int], url: str, said: str
) -> None:
    """It redirected with a flash, and the input showed the saved URL again: the one typed was lost. Only the
    site it was typed for shows it; the others show what is saved."""
    site_id = two_sites["backpain-advisor"]
    page = refused_post(admin, f"{SITES}/{site_id}/callback", SITES, callback_url=url)

    assert refusal(page) == f"Callback URL of backpain-advisor not saved: {said}."
    assert "<script>" not in page
    assert callback_inputs(page) == {"backpain-advisor": (url, True), "other-site": (STORED["other-site"], False)}
    assert site_form(page) == {"name": "", "callback_url": ""}
    assert stored_sites(sessions) == STORED
    page = admin.get(SITES).get_data(as_text=True)
    assert "not saved" not in page  # said once, not flashed for later
    assert callback_inputs(page)["backpain-advisor"] == (STORED["backpain-advisor"], False)


# --- lists: the entries it refuses ------------------------------------------------------------------


def entry_form(page: str) -> dict[str, str]:
    """What the Lists page's "add an entry" form would send: each select's chosen option (its first when none is
    selected, as a browser shows it) and the value typed."""
    form = re.search(rf'<form method="post" action="{LISTS}" class="card inline-form">(.*?)</form>', page, re.S)
    assert form is not None, page
    shown = {}
    for name in ("list_kind", "field", "site_id"):
        select = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', form.group(1), re.S)
        assert select is not None, form.group(1)
        options = [
            (html.unescape(value if has_value else text), bool(chosen))
            for has_value, value, chosen, text in re.findall(
                r'<option( value="([^"]*)")?( selected)?>([^<]*)</option>', select.group(1)
            )
        ]
        chosen = [value for value, selected in options if selected]
        assert len(chosen) <= 1, select.group(1)
        shown[name] = chosen[0] if chosen else options[0][0]
    value = re.search(r'<input name="value"[^>]*?(?: value="([^"]*)")?>', form.group(1))
    assert value is not None, form.group(1)
    shown["value"] = html.unescape(value.group(1) or "")
    return shown


def stored_entries(sessions: sessionmaker[Session]) -> list[tuple[str, str, str, int | None]]:
    with sessions() as session:
        rows = session.execute(select(ListEntry.list_kind, ListEntry.field, ListEntry.value, ListEntry.site_id))
        return sorted((kind, field, value, site_id) for kind, field, value, site_id in rows)


@pytest.fixture
def listed(sessions: sessionmaker[Session], two_sites: dict[str, int]) -> list[tuple[str, str, str, int | None]]:
    """An entry for one site and one for all sites."""
    now = datetime.now(UTC)
    with sessions.begin() as session:
        add_entry(session, "block", "word", "casino", two_sites["other-site"], None, now)
        add_entry(session, "allow", "domain", "clinic.example", None, None, now)
    return stored_entries(sessions)


@pytest.mark.parametrize(
    ("form", "said"),
    [
        (
            {"list_kind": "block", "field": "word", "value": "Casino", "site_id": "other-site"},
            "Not added: 'casino' is already on that list.",
        ),
        (
            {"list_kind": "allow", "field": "domain", "value": "clinic.example", "site_id": ""},
            "Not added: 'clinic.example' is already on that list.",
        ),
        (
            {"list_kind": "block", "field": "author", "value": "spammer@example.net", "site_id": "99999"},
            "Not added: there is no site with id 99999.",
        ),
        (
            {"list_kind": "block", "field": "word", "value": "casino", "site_id": "\u00b2"},
            "Not added: there is no site with id '\u00b2'.",
        ),
        (
            {"list_kind": "allow", "field": "word", "value": "miracle", "site_id": "other-site"},
            "Not added: allow lists hold authors and domains; a word cannot make a comment safe.",
        ),
        (
            {"list_kind": "block", "field": "domain", "value": HOSTILE, "site_id": "backpain-advisor"},
            """Not added: '"><script>alert(1)<' is not a domain name.""",
        ),
        (
            {"list_kind": "block", "field": "word", "value": "casino", "site_id": HOSTILE},
            f"Not added: there is no site with id {HOSTILE!r}.",
        ),
    ],
    ids=[
        "duplicate",
        "duplicate-all-sites",
        "unknown-site",
        "not-a-site-id",
        "allow-a-word",
        "hostile-value",
        "hostile-site-id",
    ],
)
def test_a_list_entry_the_page_refuses_answers_422_with_the_form_as_sent(
    admin: FlaskClient,
    sessions: sessionmaker[Session],
    two_sites: dict[str, int],
    listed: list[tuple[str, str, str, int | None]],
    form: dict[str, str],
    said: str,
) -> None:
    """It redirected with a flash (302): the list, field and site chosen went back to the first ones and the
    value was lost. The page answers as the Moderators and thresholds pages answer a refusal: itself, the error
    and what was sent (a site id that names no site kept as sent, not shown as "all sites"), and 422."""
    sent = {**form, "site_id": str(two_sites.get(form["site_id"], form["site_id"]))}
    page = refused_post(admin, LISTS, LISTS, **sent)

    assert refusal(page) == said
    assert entry_form(page) == sent  # as chosen and typed, to correct it
    assert "<script>" not in page  # a hostile value is shown as text
    assert "casino" in re.sub(r"<form.*?</form>", "", page, flags=re.S)  # the entries are listed still
    assert stored_entries(sessions) == listed
    assert "Not added" not in admin.get(LISTS).get_data(as_text=True)  # said once, not flashed for later


@pytest.mark.parametrize("field", ["word", "domain"])
def test_what_a_refused_list_entry_echoes_is_cut_at_the_column_s_length(
    admin: FlaskClient, sessions: sessionmaker[Session], field: str
) -> None:
    """A value sent at any length (a script, an edited form) is echoed at most as long as it can be stored, and
    the error does not quote it (a domain's did, whole)."""
    form = {"list_kind": "block", "field": field, "value": "x" * 1000, "site_id": ""}
    page = refused_post(admin, LISTS, LISTS, **form)
    assert refusal(page) == "Not added: a list entry needs a value of 1-320 characters."
    assert entry_form(page) == {**form, "value": "x" * 320}
    assert stored_entries(sessions) == []


def test_an_entry_added_meanwhile_by_another_admin_is_refused_in_the_page_s_words(
    admin: FlaskClient,
    sessions: sessionmaker[Session],
    two_sites: dict[str, int],
    listed: list[tuple[str, str, str, int | None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two admins adding one entry for a site at once: the second's check for it passes before the first
    commits, and the unique constraint refuses the row. The page said "That entry is already on the list.",
    which the check says otherwise; it says what the check would have said."""
    import moderation.lists

    monkeypatch.setattr(moderation.lists, "listed_entry", lambda *args: None)  # not committed yet
    form = {"list_kind": "block", "field": "word", "value": "Casino", "site_id": str(two_sites["other-site"])}
    page = refused_post(admin, LISTS, LISTS, **form)

    assert refusal(page) == "Not added: 'casino' is already on that list."
    assert "INSERT" not in page
    assert entry_form(page) == form
    assert stored_entries(sessions) == listed


def test_a_list_entry_the_page_takes_is_said_after_a_redirect(
    admin: FlaskClient, sessions: sessionmaker[Session], two_sites: dict[str, int]
) -> None:
    form = {"list_kind": "allow", "field": "author", "value": "Nurse@Clinic.example", "site_id": ""}
    answer = admin.post(LISTS, data={"csrf_token": csrf_token(admin, LISTS), **form})

    assert answer.status_code == 302 and answer.headers["Location"] == LISTS
    page = admin.get(LISTS).get_data(as_text=True)
    assert "Added; it applies to the next comments decided." in page
    assert entry_form(page) == {"list_kind": "block", "field": "word", "value": "", "site_id": ""}
    assert stored_entries(sessions) == [("allow", "author", "nurse@clinic.example", None)]


# --- failing callbacks -------------------------------------------------------------------------------


def failing_callback(
    session: Session, site: Site, external_id: str, created: datetime, failed: datetime, error: str, code: int | None
) -> int:
    """A callback created at ``created`` whose attempt at ``failed`` got ``code`` and ``error``: due an hour later."""
    comment_id, decision_id = held_comment(session, site, external_id)
    comment, decision = session.get_one(Comment, comment_id), session.get_one(Decision, decision_id)
    delivery = callbacks.schedule_callback(session, site, comment, decision, callbacks.COMMENT_DECIDED, created)
    assert delivery is not None
    callbacks.record_failed(
        session, delivery, status_code=code, error=error, retry_after=3600, now=failed, policy=RetryPolicy()
    )
    return delivery.id


def failing_rows(page: str) -> list[list[str]]:
    """The cells of the Callbacks page's table of failing callbacks, as HTML with its whitespace collapsed."""
    section = page.split('<h2 id="failing">', 1)[1].split("<h2", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", " ".join(section.split()))
    return [[cell.strip() for cell in re.findall(r"<td>(.*?)</td>", row)] for row in rows if "<td>" in row]


def minute(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def test_the_callbacks_page_shows_each_sites_failing_callbacks_before_they_are_dead(
    admin: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    now = datetime.now(UTC)
    refused = "<script>alert('x')</script> refused: cannot resolve backpain.example" + " (and more)" * 20
    with sessions.begin() as session:
        backpain, _ = create_site(session, "backpain-advisor", "https://backpain.example/moderation-callback")
        other, _ = create_site(session, "other-site", "https://other.example/callback")
        paused, _ = create_site(session, "paused-site", "https://paused.example/callback")
        oldest = now - timedelta(hours=3)
        failing_callback(session, backpain, "c-1", oldest, now - timedelta(hours=2), "ConnectError", None)
        failing_callback(
            session, backpain, "c-2", now - timedelta(minutes=10), now - timedelta(minutes=9), refused, None
        )
        failing_callback(session, other, "c-1", now - timedelta(minutes=30), now - timedelta(minutes=5), "Busy", 503)
        failing_callback(session, paused, "c-1", now - timedelta(hours=1), now - timedelta(hours=1), "Busy", 503)
        callbacks.pause_callbacks(session, paused, now, "admin@example.org")

    page = admin.get(CALLBACKS).get_data(as_text=True)

    later = (now + timedelta(minutes=55)).strftime("%Y-%m-%d %H:%M:%S")
    assert failing_rows(page) == [
        # the newest callback's answer, cut as the dead letters' are; the soonest next attempt, already due
        ["backpain-advisor", "2", minute(oldest), str(escape(refused[:120])), "due now"],
        ["other-site", "1", minute(now - timedelta(minutes=30)), "503 Busy", later],
    ]
    assert "<script>" not in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert "1 more held back for paused sites" in page  # not failing: counted apart, as before
    assert "None: no callback has run out of attempts or been held back by a 410." in page


def test_the_callbacks_page_says_when_no_callback_is_failing(admin: FlaskClient) -> None:
    page = admin.get(CALLBACKS).get_data(as_text=True)
    assert failing_rows(page) == []
    assert "None: no site's callbacks are failing right now." in page
    assert "every callback was delivered or is still being retried" not in page


def callbacks_cells(page: str) -> dict[str, str]:
    """Per site, the Sites page's Callbacks cell (its third), as HTML with its whitespace collapsed."""
    rows = re.findall(r"<tr> <td>(.*?)</td>(.*?)</tr>", " ".join(page.split()))
    return {name: re.findall(r"<td>(.*?)</td>", rest)[1].strip() for name, rest in rows}


def test_the_sites_page_says_whose_callbacks_are_failing_and_links_to_them(
    admin: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    now = datetime.now(UTC)
    with sessions.begin() as session:
        failing, _ = create_site(session, "backpain-advisor", "https://backpain.example/moderation-callback")
        create_site(session, "healthy-site", "https://healthy.example/callback")
        paused, _ = create_site(session, "paused-site", "https://paused.example/callback")
        for n in range(3):
            failing_callback(session, failing, f"c-{n}", now, now, "refused: cannot resolve backpain.example", None)
        failing_callback(session, paused, "c-1", now, now, "Busy", 503)
        callbacks.pause_callbacks(session, paused, now, "admin@example.org")

    cells = callbacks_cells(admin.get(SITES).get_data(as_text=True))

    link = f'<a href="{CALLBACKS}#failing">3 failing, see Callbacks</a>'
    assert cells["backpain-advisor"].startswith(f"on — {link}")
    assert cells["healthy-site"].startswith("on <form")
    assert cells["paused-site"].startswith('<span class="badge held">paused by admin@example.org')
    assert "failing" not in cells["paused-site"]


def statements_for(app: Flask, client: FlaskClient, path: str) -> int:
    with statements_run(app.extensions["moderation"].sessions.kw["bind"]) as statements:
        assert client.get(path).status_code == 200
    return len(statements)


def test_many_failing_callbacks_cost_the_pages_no_more_statements_than_one(
    app: Flask, admin: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    now = datetime.now(UTC)
    with sessions.begin() as session:
        sites = [create_site(session, name, f"https://{name}.example/cb")[0] for name in ("site-a", "site-b")]
        for site in sites:
            failing_callback(session, site, "c-0", now, now, "Busy", 503)
    one_each = [statements_for(app, admin, path) for path in (SITES, CALLBACKS)]
    with sessions.begin() as session:
        for site in session.scalars(select(Site)):
            for n in range(1, 8):
                failing_callback(session, site, f"c-{n}", now, now, "Busy", 503)

    assert [statements_for(app, admin, path) for path in (SITES, CALLBACKS)] == one_each
    assert [row[:2] for row in failing_rows(admin.get(CALLBACKS).get_data(as_text=True))] == [
        ["site-a", "8"],
        ["site-b", "8"],
    ]
    assert "8 failing, see Callbacks" in admin.get(SITES).get_data(as_text=True)


# --- callbacks waiting for a site whose callbacks are off ----------------------------------------------------


def held_rows(page: str) -> dict[int, str]:
    """The Callbacks page's table of dead-lettered and held-back callbacks: per callback id, its status cell."""
    section = " ".join(page.split("<h2>Dead-lettered", 1)[1].split())
    rows = re.findall(r"<tr><td>(\d+)</td>(.*?)</tr>", section)
    return {int(delivery_id): html.unescape(re.findall(r"<td>(.*?)</td>", rest)[3]) for delivery_id, rest in rows}


def test_callbacks_waiting_for_a_site_whose_callbacks_are_off_are_shown_and_replayed_once(
    admin: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    """A review's finding: when a site answers 410, its waiting callbacks are held back, but not one that was
    on the wire then (it comes back pending when its own attempt fails) nor, on PostgreSQL, one another
    transaction held (``_hold_back_waiting(skip_locked=True)``). Pending, they are claimed by nothing while the
    site's callbacks are off, and the Callbacks page, listing dead and held-back ones only, showed them nowhere.
    They are listed with the held-back ones (a paused site's counted with its held-back ones), and a replay of
    one turns the site's callbacks on as a replay of a held-back one does; each is then sent once."""
    now = datetime.now(UTC)
    policy = RetryPolicy()
    postgresql = sessions.kw["bind"].dialect.name == "postgresql"
    with sessions.begin() as session:
        gone, _ = create_site(session, "gone-site", "https://gone.example/callback")
        paused, _ = create_site(session, "paused-site", "https://paused.example/callback")
        ids = {}
        for site, external_id in [(gone, "c-410"), (gone, "c-on-the-wire"), (gone, "c-busy"), (paused, "p-1")]:
            comment_id, decision_id = held_comment(session, site, external_id)
            comment, decision = session.get_one(Comment, comment_id), session.get_one(Decision, decision_id)
            delivery = callbacks.schedule_callback(session, site, comment, decision, callbacks.COMMENT_DECIDED, now)
            assert delivery is not None
            ids[external_id] = delivery.id
    with sessions.begin() as session:  # sent, all but the busy one
        sent = [ids["c-410"], ids["c-on-the-wire"], ids["p-1"]]
        leases = {d.id: d.lease_until for d in callbacks.claim_deliveries(session, sent, now, policy)}
    with sessions.begin() as session:
        callbacks.pause_callbacks(session, session.get_one(Site, paused.id), now, "admin@example.org")

    busy = sessions()
    try:
        if postgresql:  # a moderator's verdict holds the busy one while the worker records the 410
            busy.get_one(CallbackDelivery, ids["c-busy"], with_for_update=True)
        with sessions.begin() as worker:
            gone_410 = callbacks.AttemptOutcome(ids["c-410"], 410, False, "Gone")
            callbacks.record_attempts(worker, [gone_410], now, policy, lease=leases[ids["c-410"]])
    finally:
        busy.rollback()
        busy.close()
    for external_id in ("c-on-the-wire", "p-1"):  # their own attempts fail after the site's callbacks went off
        with sessions.begin() as worker:
            failed = callbacks.AttemptOutcome(ids[external_id], 503, False, "Busy")
            callbacks.record_attempts(worker, [failed], now, policy, lease=leases[ids[external_id]])

    waiting = "waiting: the site's callbacks are off"
    page = admin.get(CALLBACKS).get_data(as_text=True)
    assert held_rows(page) == {
        ids["c-410"]: "disabled",
        ids["c-on-the-wire"]: waiting,
        ids["c-busy"]: waiting if postgresql else "disabled",  # SQLite has no row locks: nothing is skipped
    }
    assert "1 more held back for paused sites" in page  # p-1, pending, not left out
    with sessions() as session:
        assert callbacks.due_deliveries(session, now + timedelta(days=1)) == []

    token = csrf_token(admin, CALLBACKS)
    replayed = admin.post(f"{CALLBACKS}/{ids['c-on-the-wire']}/replay", data={"csrf_token": token})
    assert replayed.status_code == 302
    page = admin.get(CALLBACKS).get_data(as_text=True)
    assert f"Callback {ids['c-on-the-wire']} queued again." in page
    assert held_rows(page) == {}
    gone_ids = sorted(ids[name] for name in ("c-410", "c-on-the-wire", "c-busy"))
    with sessions.begin() as session:
        assert session.get_one(Site, gone.id).callback_disabled_at is None
        replay_of = session.get_one(CallbackDelivery, ids["c-on-the-wire"])
        assert (replay_of.status, replay_of.attempts) == ("pending", 0)
        later = datetime.now(UTC) + timedelta(seconds=1)
        assert sorted(callbacks.due_deliveries(session, later)) == gone_ids
        assert sorted(d.id for d in callbacks.claim_deliveries(session, gone_ids, later, policy)) == gone_ids
    with sessions.begin() as session:  # claimed: none is sent a second time
        assert callbacks.claim_deliveries(session, gone_ids, later, policy) == []
    again = admin.post(f"{CALLBACKS}/{ids['c-on-the-wire']}/replay", data={"csrf_token": token})
    assert again.status_code == 302  # a second click: the site's callbacks are on, so it is queued, not waiting
    assert f"Callback {ids['c-on-the-wire']} is being sent right now" in admin.get(CALLBACKS).get_data(as_text=True)

    # The paused site's, replayed, waits for the resume with the rest, as a held-back one does.
    replayed = admin.post(f"{CALLBACKS}/{ids['p-1']}/replay", data={"csrf_token": token})
    assert replayed.status_code == 302
    page = admin.get(CALLBACKS).get_data(as_text=True)
    assert f"Callback {ids['p-1']} queued again; it is sent when the site&#39;s callbacks are resumed." in page
    assert "1 more held back for paused sites" in page
    with sessions() as session:
        assert session.get_one(CallbackDelivery, ids["p-1"]).status == "disabled"
        assert ids["p-1"] not in callbacks.due_deliveries(session, later + timedelta(days=1))
