"""What an admin changes on the moderators and lists pages, and what that changes for others, through
the real app's test client (CSRF on), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.entities import Comment, ListEntry, Moderator
from moderation.decisions import gather_signals
from moderation.sites import create_site
from tests.support.dashboard import add_moderator, csrf_token, held_comment, sign_in

MODERATORS = "/dashboard/admin/moderators"
LISTS = "/dashboard/admin/lists"


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


def update_account(client: FlaskClient, moderator_id: int, **form: str) -> str:
    """Post the moderators page's form for one account; the page it leads back to, with its messages."""
    token = csrf_token(client, MODERATORS)
    answer = client.post(f"{MODERATORS}/{moderator_id}", data={"csrf_token": token, **form})
    assert answer.status_code == 302 and answer.headers["Location"] == MODERATORS
    return client.get(MODERATORS).get_data(as_text=True)


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
    page = update_account(admin, people["admin"], **form)

    assert "You cannot change your own role or deactivate yourself." in page
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


# --- block and allow lists ---------------------------------------------------------------------------


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
