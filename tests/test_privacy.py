"""Author erasure and retention (issue 7), on SQLite and PostgreSQL.

The erasure test puts one distinctive author into every table the service writes (through the webhook, the
worker's use case, the dashboard and the block list), erases them, then reads every text and JSON column of
every table looking for any of their personal values.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import JSON, Engine, String, Text, func, select, update

from models.base import Base
from models.db import make_session_factory
from models.entities import (
    PERSONAL_COLUMNS,
    CallbackDelivery,
    Comment,
    CommentStatus,
    Decision,
    ListEntry,
    ModerationAction,
    Moderator,
    Site,
    TrainingLabel,
)
from moderation import privacy
from moderation.decisions import decide_comment
from moderation.learning import moderator_examples
from moderation.lists import add_entry
from moderation.privacy import Erasure, apply_retention, erase_author, erase_comments_of_site
from moderation.review import APPROVE, REJECT, record_verdict
from moderation.sites import create_site, get_site
from server.cli import main
from server.factory import build_celery
from server.logs import JsonFormatter
from server.settings import Settings
from tests.conftest import TrainedModel
from tests.support.dashboard import act, add_moderator, sign_in
from tests.support.signing import comment_event, encode, signed_headers
from webhooks.schemas import Author

SITE = "privacy-site"
OTHER_SITE = "other-site"
DISTINCTIVE = {
    "name": "Zebulon Quackenbush",
    "email": "Zeb.Quackenbush@erase-me.example",
    "url": "https://zeb-quackenbush.erase-me.example/about",
    "ip": "198.51.100.77",
    "user_agent": "QuackBrowser/9.9 (erase-test)",
}
# Every field of the webhook's author, from its schema: a field it gains is sent too (with a value made from its
# name, unless its validation needs one in DISTINCTIVE), so the erasure tests find it wherever it is left.
AUTHOR = {field: DISTINCTIVE.get(field, f"quackenbush-{field}-erase-test") for field in Author.model_fields}
# Every value, and the distinctive pieces of them that could survive in derived rows.
PERSONAL = [*AUTHOR.values(), "zebulon", "quackenbush", "erase-me.example", "quackbrowser"]
OTHER_AUTHOR = {"name": "Jan", "email": "jan@example.org", "url": "", "ip": "203.0.113.9", "user_agent": "Mozilla/5.0"}
ORDINARY = "Thanks for this article, I had no idea massage could help with back pain."
ADVICE = "That's sciatica, not a muscle. Take 800mg ibuprofen every 6 hours and skip the physio."
SPAM = "Best prices on pain pills, no prescription needed!!! Order now at www.cheap-rx-pharmacy.xyz"


@pytest.fixture
def secrets(engine: Engine) -> dict[str, str]:
    with make_session_factory(engine).begin() as session:
        _, secret = create_site(session, SITE, "http://127.0.0.1:9/callback")
        _, other = create_site(session, OTHER_SITE, "http://127.0.0.1:9/callback")
    return {SITE: secret, OTHER_SITE: other}


def send(client: FlaskClient, secret: str, event: dict[str, Any]) -> Any:
    body = encode(event)
    response = client.post("/webhooks/comments", data=body, headers=signed_headers(secret, body))
    assert response.status_code in {200, 202}, response.get_data(as_text=True)
    return response.get_json()


def event(
    kind: str, comment_id: str, body: str, author: dict[str, str], site: str = SITE, **data: Any
) -> dict[str, Any]:
    created = comment_event(site, comment_id, body=body, author=dict(author), **data)
    created["type"] = kind
    return created


def decide(engine: Engine, model: TrainedModel, comment_id: int) -> None:
    with make_session_factory(engine).begin() as session:
        decide_comment(session, comment_id, model.model, datetime.now(UTC))


def current_decision_id(engine: Engine, comment_id: int) -> int:
    with engine.connect() as connection:
        found = connection.scalar(select(Decision.id).where(Decision.comment_id == comment_id, Decision.is_current))
    assert found is not None
    return int(found)


def erase_via_api(client: FlaskClient, secret: str, site: str, email: str) -> Any:
    body = json.dumps({"email": email}).encode()
    return client.post(f"/api/authors/erase?site={site}", data=body, headers=signed_headers(secret, body))


# Random text the service generates, where a short name turns up by chance ("Jan" in a site secret's base64
# "…SEJan9…" failed a full run once): no author data can be in them.
GENERATED_COLUMNS = {
    ("site_secrets", "secret"),
    ("moderators", "password_hash"),
    ("moderators", "session_token"),
}


def test_the_generated_columns_left_out_of_the_search_exist() -> None:
    """A renamed one would be searched again, and a short name found by chance in its random text."""
    tables = Base.metadata.tables
    assert all(column in tables[table].columns for table, column in GENERATED_COLUMNS)


def personal_values_left(engine: Engine, values: list[str]) -> list[str]:
    """Every text and JSON cell of every table that contains one of ``values`` (case-insensitively), apart
    from the generated secrets, hashes and tokens."""
    wanted = [v.casefold() for v in values if v]
    found = []
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            columns = [
                c
                for c in table.columns
                if isinstance(c.type, String | Text | JSON) and (table.name, c.name) not in GENERATED_COLUMNS
            ]
            if not columns:
                continue
            for row in connection.execute(select(*columns)):
                for column, cell in zip(columns, row, strict=True):
                    text = (json.dumps(cell) if not isinstance(cell, str) else cell).casefold()
                    found += [f"{table.name}.{column.name}: {v}" for v in wanted if v in text]
    return found


def statistics(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                select(Decision.comment_id, Decision.outcome, Decision.spam_score, Decision.is_current).order_by(
                    Decision.id
                )
            )
        ]


def test_erasure_leaves_nothing_personal_in_any_table_and_keeps_the_statistics(
    client: FlaskClient,
    secrets: dict[str, str],
    engine: Engine,
    active_model: TrainedModel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = secrets[SITE]
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        add_moderator(session, "ana@example.org")
        site = get_site(session, SITE)
        assert site is not None
        add_entry(session, "block", "author", AUTHOR["email"], site.id, None, datetime.now(UTC))

    # The author's comments: one the block list rejects, one held then reviewed by a moderator (with a note
    # naming them), one edited, one deleted; and another author's comment that must come through untouched.
    blocked = send(client, secret, event("comment.created", "p-1", ORDINARY, AUTHOR))["id"]
    reviewed = send(client, secret, event("comment.created", "p-2", ADVICE, AUTHOR))["id"]
    edited = send(client, secret, event("comment.created", "p-3", SPAM, AUTHOR))["id"]
    removed = send(client, secret, event("comment.created", "p-4", ADVICE, AUTHOR))["id"]
    control = send(client, secret, event("comment.created", "p-5", ADVICE, OTHER_AUTHOR))["id"]
    for comment_id in (blocked, reviewed, edited, removed, control):
        decide(engine, active_model, comment_id)
    assert sign_in(client, "ana@example.org").status_code in {200, 302}
    note = f"Checked with {AUTHOR['name']} ({AUTHOR['email']}, {AUTHOR['ip']}): dosing advice"
    expected = current_decision_id(engine, reviewed)
    answer = act(client, reviewed, "reject", expected, reason="medical_advice", note=note)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    act(client, control, "approve", current_decision_id(engine, control))
    send(client, secret, event("comment.updated", "p-3", ORDINARY, AUTHOR, updated_at="2026-11-26T11:00:00Z"))
    decide(engine, active_model, edited)
    send(
        client,
        secret,
        {"type": "comment.deleted", "data": {"comment_id": "p-4", "site": SITE, "deleted_at": "2026-11-26T12:00:00Z"}},
    )
    # The same e-mail on another site is that site's business: it keeps its data.
    same_email = {**OTHER_AUTHOR, "email": AUTHOR["email"]}
    elsewhere = send(
        client, secrets[OTHER_SITE], event("comment.created", "p-1", ORDINARY, same_email, site=OTHER_SITE)
    )
    decide(engine, active_model, elsewhere["id"])

    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(TrainingLabel)) == 2
    # The search finds the author wherever the flow put them: the test can fail.
    tables = {entry.split(".")[0] for entry in personal_values_left(engine, PERSONAL)}
    assert {"comments", "list_entries", "decisions", "moderation_actions"} <= tables
    before = statistics(engine)

    erased = erase_via_api(client, secret, SITE, AUTHOR["email"].upper())

    assert erased.status_code == 200, erased.get_data(as_text=True)
    assert erased.get_json() == {
        "site": SITE,
        "comments_erased": 4,
        "list_entries_removed": 1,
        "all_sites_entries_kept": 0,
    }
    left = personal_values_left(engine, PERSONAL)
    # Only the other site's own copy of the e-mail is left, with the copy its search reads.
    assert sorted(left) == [
        "comments.author_email: erase-me.example",
        "comments.author_email: quackenbush",
        "comments.author_email: zeb.quackenbush@erase-me.example",
        "comments.search_author: erase-me.example",
        "comments.search_author: quackenbush",
        "comments.search_author: zeb.quackenbush@erase-me.example",
    ]
    with engine.connect() as connection:
        others = connection.execute(select(Comment).where(Comment.id == elsewhere["id"])).one()
        assert others.author_email == AUTHOR["email"]
        kept = connection.execute(select(Comment).where(Comment.id == control)).one()
        assert (kept.author_name, kept.author_email, kept.author_ip) == ("Jan", "jan@example.org", "203.0.113.9")
        not_erased = select(Comment.external_id).where(Comment.site_id != others.site_id, Comment.erased_at.is_(None))
        assert list(connection.scalars(not_erased)) == ["p-5"]  # the other author's comment only
        assert connection.scalar(select(func.count()).select_from(ListEntry)) == 0
        assert connection.scalar(select(Comment.body).where(Comment.id == removed)) == ""  # deleted: text gone too
        assert connection.scalar(select(Comment.body).where(Comment.id == reviewed)) == ADVICE
    assert statistics(engine) == before  # decisions, outcomes and scores all kept

    # The JSON logs of the whole flow carried ids only, never the author.
    formatter = JsonFormatter()
    logged = "\n".join(formatter.format(record) for record in caplog.records).casefold()
    assert "comment accepted" in logged
    assert [v for v in PERSONAL if v.casefold() in logged] == []

    # Idempotent; and later events from the site do not bring the data back.
    assert erase_via_api(client, secret, SITE, AUTHOR["email"]).get_json()["comments_erased"] == 0
    send(client, secret, event("comment.updated", "p-3", ORDINARY, AUTHOR, updated_at="2026-11-26T13:00:00Z"))
    with engine.connect() as connection:
        assert connection.scalar(select(Comment.author_email).where(Comment.id == edited)) is None


def test_every_field_of_the_webhooks_author_is_stored_in_a_declared_personal_column(
    client: FlaskClient, secrets: dict[str, str], engine: Engine
) -> None:
    """Erasure, retention and the edit path clear or guard the columns declared in ``PERSONAL_COLUMNS`` only: an
    author field stored in a column left out of the declaration would never be erased."""
    declared = {column.key for column in PERSONAL_COLUMNS}
    undeclared = [field for field in Author.model_fields if f"author_{field}" not in declared]
    assert undeclared == [], "author fields with no column in models.entities.PERSONAL_COLUMNS"

    comment_id = send(client, secrets[SITE], event("comment.created", "p-1", ORDINARY, AUTHOR))["id"]

    with engine.connect() as connection:
        stored = connection.execute(select(*PERSONAL_COLUMNS).where(Comment.id == comment_id)).one()._asdict()
    sent = {f"author_{field}": value for field, value in AUTHOR.items()}
    assert {column: stored[column] for column in sent} == sent


def test_erasure_rewrites_the_authors_reasons_but_not_outcomes_that_look_like_the_author(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, active_model: TrainedModel
) -> None:
    """Review #7: every string of reasons and payloads went through the personal-value regex, so an author
    named "rejected" (or "blocked_term", "spam", ...) turned the callback's status or reasons into "[erased]"."""
    author = {**OTHER_AUTHOR, "name": "rejected", "email": "blocked_term@erase-me.example"}
    with make_session_factory(engine).begin() as session:
        site = get_site(session, SITE)
        assert site is not None
        add_entry(session, "block", "author", author["email"], site.id, None, datetime.now(UTC))
    comment_id = send(client, secrets[SITE], event("comment.created", "p-9", ORDINARY, author))["id"]
    decide(engine, active_model, comment_id)
    with engine.connect() as connection:
        reasons = connection.scalar(select(Decision.reasons).where(Decision.comment_id == comment_id))
        payload = connection.scalar(select(CallbackDelivery.payload).where(CallbackDelivery.comment_id == comment_id))
    assert payload is not None
    assert reasons == ["blocked_term"] and payload["data"]["status"] == "rejected"

    assert erase_via_api(client, secrets[SITE], SITE, author["email"]).get_json()["comments_erased"] == 1

    expected = ["author:[erased]" if r.startswith("author:") else r for r in reasons]
    with engine.connect() as connection:
        assert connection.scalar(select(Decision.reasons).where(Decision.comment_id == comment_id)) == expected
        after = connection.scalar(select(CallbackDelivery.payload).where(CallbackDelivery.comment_id == comment_id))
    assert after == {**payload, "data": {**payload["data"], "reasons": expected}}
    assert personal_values_left(engine, [author["email"]]) == []


def test_erasure_drops_the_explaining_words_of_a_name_too_short_to_search_for(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, active_model: TrainedModel
) -> None:
    """The pieces of "Al Ng" are too short to strip from text one by one ("al" is in many words), but an
    explanation marks the words found only in the name ("name: al"), and those go whatever their length; the
    text's own words stay."""
    author = {**OTHER_AUTHOR, "name": "Al Ng", "email": "alng@erase-me.example"}
    comment_id = send(client, secrets[SITE], event("comment.created", "p-al", ORDINARY, author))["id"]
    decide(engine, active_model, comment_id)
    decision_id = current_decision_id(engine, comment_id)
    from_the_text = {"feature": "massage", "weight": 0.4}
    with make_session_factory(engine).begin() as session:
        session.get_one(Decision, decision_id).explanation = {
            "spam": [{"feature": "name: al", "weight": 0.9}, from_the_text],
            "medical_advice": [],
        }

    assert erase_via_api(client, secrets[SITE], SITE, author["email"]).get_json()["comments_erased"] == 1

    with engine.connect() as connection:
        explanation = connection.scalar(select(Decision.explanation).where(Decision.id == decision_id))
    assert explanation == {"spam": [from_the_text], "medical_advice": []}


def test_erasure_drops_the_words_of_a_name_an_edit_already_cleared(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, active_model: TrainedModel
) -> None:
    """An edit sent without an author clears the stored name, and with it every value erasure searched for, so
    it skipped the decisions: the first one's "name: quackenbush" outlived the erasure. Such words need none."""
    author = {**OTHER_AUTHOR, "name": "Quackenbush", "email": "", "ip": ""}
    comment_id = send(client, secrets[SITE], event("comment.created", "p-edit", ORDINARY, author))["id"]
    decide(engine, active_model, comment_id)
    decision_id = current_decision_id(engine, comment_id)
    with make_session_factory(engine).begin() as session:
        session.get_one(Decision, decision_id).explanation = {
            "spam": [{"feature": "name: quackenbush", "weight": 0.9}],
            "medical_advice": [],
        }
    send(client, secrets[SITE], event("comment.updated", "p-edit", ORDINARY, {}, updated_at="2026-11-26T11:00:00Z"))
    with engine.connect() as connection:
        assert connection.scalar(select(Comment.author_name).where(Comment.id == comment_id)) in (None, "")

    with make_session_factory(engine).begin() as session:
        site = get_site(session, SITE)
        assert site is not None
        assert erase_comments_of_site(session, site, ["p-edit"], datetime.now(UTC)).comments == 1

    with engine.connect() as connection:
        explanation = connection.scalar(select(Decision.explanation).where(Decision.id == decision_id))
    assert explanation == {"spam": [], "medical_advice": []}


def test_an_edit_replacing_the_authors_values_scrubs_the_replaced_ones_from_notes_as_an_erasure_would(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, active_model: TrainedModel
) -> None:
    """A cold review's note: an erasure scrubs the values on the comment, so a name or e-mail an edit replaced
    stayed for ever in the notes written before. The edit scrubs them now; a value still on the comment stays,
    also where a replaced one is part of it, for the erasure to find whole."""
    with make_session_factory(engine).begin() as session:
        add_moderator(session, "ana@example.org")
    assert sign_in(client, "ana@example.org").status_code in {200, 302}
    before = {**AUTHOR, "name": "Zebulon"}
    comment_id = send(client, secrets[SITE], event("comment.created", "p-moved", ADVICE, before))["id"]
    decide(engine, active_model, comment_id)
    note = f"Zebulon Quackenbush, or Zebulon ({AUTHOR['email']}), again"
    answer = act(client, comment_id, "reject", current_decision_id(engine, comment_id), reason="other", note=note)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    after = {**AUTHOR, "email": "zq@elsewhere.example"}  # a longer name, another address

    send(client, secrets[SITE], event("comment.updated", "p-moved", ADVICE, after, updated_at="2026-11-26T11:00:00Z"))

    with engine.connect() as connection:
        notes = set(connection.scalars(select(Decision.note).where(Decision.note.is_not(None))))
        notes |= set(connection.scalars(select(ModerationAction.note).where(ModerationAction.note.is_not(None))))
    assert notes == {"Zebulon Quackenbush, or [erased] ([erased]), again"}
    assert erase_via_api(client, secrets[SITE], SITE, after["email"]).get_json()["comments_erased"] == 1
    assert personal_values_left(engine, [*PERSONAL, after["email"]]) == []


def explanation_of(engine: Engine, decision_id: int) -> dict[str, Any]:
    with engine.connect() as connection:
        return dict(connection.scalar(select(Decision.explanation).where(Decision.id == decision_id)) or {})


def test_an_edit_replacing_the_authors_url_drops_its_words_from_earlier_explanations_as_an_erasure_would(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, active_model: TrainedModel
) -> None:
    """The text's "quackpills" is dropped from an explanation by an erasure while the author's URL is
    quackpills.example; once an edit replaced the URL no erasure knows it, and the word stayed for ever. The edit
    drops it now; a word still in the new values ("shop"), the name's words and the text's own stay."""
    before = {**OTHER_AUTHOR, "url": "https://quackpills.example/shop"}
    comment_id = send(client, secrets[SITE], event("comment.created", "p-url", SPAM, before))["id"]
    decide(engine, active_model, comment_id)
    decision_id = current_decision_id(engine, comment_id)
    from_the_text = [{"feature": "prescription", "weight": 0.7}, {"feature": "link", "weight": 0.3}]
    still_held = [{"feature": "shop", "weight": 0.5}, {"feature": "name: jan", "weight": 0.2}]
    with make_session_factory(engine).begin() as session:
        session.get_one(Decision, decision_id).explanation = {
            "spam": [{"feature": "quackpills", "weight": 0.9}, *from_the_text, *still_held],
            "medical_advice": [{"feature": "quackpills", "weight": 0.1}],
        }
    after = {**before, "url": "https://healthy.example/shop"}

    send(client, secrets[SITE], event("comment.updated", "p-url", SPAM, after, updated_at="2026-11-26T11:00:00Z"))

    assert explanation_of(engine, decision_id) == {"spam": [*from_the_text, *still_held], "medical_advice": []}
    # The words still held go with an erasure, which knows the values they came from.
    assert erase_via_api(client, secrets[SITE], SITE, after["email"]).get_json()["comments_erased"] == 1
    assert explanation_of(engine, decision_id) == {"spam": from_the_text, "medical_advice": []}


def test_an_edit_replacing_the_name_and_e_mail_drops_their_words_but_one_replacing_the_ip_leaves_explanations(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, active_model: TrainedModel
) -> None:
    """Every decision of the comment, not only the current one. The network values are not the author's words:
    an IP address's "100" or a user agent's "windows" would take the text's own (see IDENTITY_COLUMNS)."""
    before = {**AUTHOR, "name": "Zebulon Quackenbush", "email": "zeb@quackpills.example"}
    comment_id = send(client, secrets[SITE], event("comment.created", "p-who", SPAM, before))["id"]
    decide(engine, active_model, comment_id)
    first_id = current_decision_id(engine, comment_id)
    from_the_text = [{"feature": "100", "weight": 0.6}, {"feature": "prescription", "weight": 0.5}]
    explanation = {
        "spam": [
            {"feature": "name: zebulon", "weight": 0.9},
            {"feature": "quackpills", "weight": 0.8},
            {"feature": "quackenbush", "weight": 0.7},
            *from_the_text,
        ],
        "medical_advice": [],
    }
    with make_session_factory(engine).begin() as session:
        session.get_one(Decision, first_id).explanation = explanation
    moved = {**before, "ip": "203.0.113.10", "user_agent": "Windows 100"}
    send(client, secrets[SITE], event("comment.updated", "p-who", SPAM, moved, updated_at="2026-11-26T11:00:00Z"))
    assert explanation_of(engine, first_id) == explanation

    # A new text is classified again: the first decision is no longer current, and is scrubbed all the same.
    send(client, secrets[SITE], event("comment.updated", "p-who", ADVICE, moved, updated_at="2026-11-26T12:00:00Z"))
    decide(engine, active_model, comment_id)
    assert current_decision_id(engine, comment_id) != first_id
    renamed = {**moved, "name": "Quackenbush", "email": "zq@elsewhere.example"}
    send(client, secrets[SITE], event("comment.updated", "p-who", ADVICE, renamed, updated_at="2026-11-26T13:00:00Z"))

    kept = [{"feature": "quackenbush", "weight": 0.7}, *from_the_text]  # "quackenbush" is still the name
    assert explanation_of(engine, first_id) == {"spam": kept, "medical_advice": []}


def test_erasure_matches_non_ascii_capitals_and_removes_the_sites_list_entries_of_the_email_only(
    client: FlaskClient, secrets: dict[str, str], engine: Engine
) -> None:
    """Review #9: SQL lower() is ASCII-only on SQLite, so "ÅSA@..." was not erased for "åsa@...".
    Entries by name are left (a name may be someone else's: review #10 found other people's removed), and the
    all-sites entry for the address is kept and counted (see the next test)."""
    author = {**OTHER_AUTHOR, "name": "Åsa Öberg", "email": "ÅSA.ÖBERG@Erase-Me.example"}
    send(client, secrets[SITE], event("comment.created", "p-10", ORDINARY, author))
    namesake = {**OTHER_AUTHOR, "name": "Åsa Öberg", "email": "another.asa@example.org"}
    send(client, secrets[SITE], event("comment.created", "p-11", ORDINARY, namesake))
    with make_session_factory(engine).begin() as session:
        site = get_site(session, SITE)
        assert site is not None
        now = datetime.now(UTC)
        add_entry(session, "block", "author", author["email"], site.id, None, now)
        add_entry(session, "block", "author", author["email"], None, None, now)  # all sites
        add_entry(session, "block", "author", author["name"], site.id, None, now)  # the namesake's too

    erased = erase_via_api(client, secrets[SITE], SITE, "åsa.öberg@erase-me.example")

    assert erased.get_json() == {
        "site": SITE,
        "comments_erased": 1,
        "list_entries_removed": 1,
        "all_sites_entries_kept": 1,
    }
    with engine.connect() as connection:
        left = connection.execute(select(ListEntry.value, ListEntry.site_id).order_by(ListEntry.id))
        assert [(value, site_id is None) for value, site_id in left] == [
            (author["email"].casefold(), True),
            (author["name"].casefold(), False),
        ]
        emails = connection.scalars(select(Comment.author_email).order_by(Comment.external_id))
        assert list(emails) == [None, namesake["email"]]


def test_no_sites_erasure_removes_an_entry_that_applies_to_every_site(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Security review: any site's erasure removed the all-sites block entry, unblocking a spammer for every
    site; a site can send a comment under any address first, so having their comments proves nothing."""
    caplog.set_level(logging.WARNING)
    spammer = {**OTHER_AUTHOR, "email": "spammer@erase-me.example"}
    with make_session_factory(engine).begin() as session:
        other = get_site(session, OTHER_SITE)
        assert other is not None
        now = datetime.now(UTC)
        add_entry(session, "block", "author", spammer["email"], None, None, now)  # all sites
        add_entry(session, "block", "author", spammer["email"], other.id, None, now)  # the other site's own
    for site in (SITE, OTHER_SITE):  # each with a comment under that address
        send(client, secrets[site], event("comment.created", "p-20", ORDINARY, spammer, site=site))

    erased = erase_via_api(client, secrets[OTHER_SITE], OTHER_SITE, spammer["email"])

    assert erased.get_json() == {
        "site": OTHER_SITE,
        "comments_erased": 1,
        "list_entries_removed": 1,
        "all_sites_entries_kept": 1,
    }
    assert f"an erasure for site {OTHER_SITE} kept all-sites list entries naming the author (ids " in caplog.text
    assert spammer["email"] not in caplog.text
    assert erase_via_api(client, secrets[SITE], SITE, spammer["email"]).get_json()["all_sites_entries_kept"] == 1
    with engine.connect() as connection:
        assert list(connection.scalars(select(ListEntry.site_id))) == [None]


def test_erasure_api_needs_the_sites_own_signature_and_a_valid_body(
    client: FlaskClient, secrets: dict[str, str], engine: Engine
) -> None:
    send(client, secrets[SITE], event("comment.created", "p-1", ORDINARY, AUTHOR))
    body = json.dumps({"email": AUTHOR["email"]}).encode()

    # Signed by the other site while naming this one: refused.
    wrong = client.post(f"/api/authors/erase?site={SITE}", data=body, headers=signed_headers(secrets[OTHER_SITE], body))
    unsigned = client.post(f"/api/authors/erase?site={SITE}", data=body, headers={"content-type": "application/json"})
    assert (wrong.status_code, unsigned.status_code) == (401, 401)
    # The other site, signing for itself, erases only its own comments: none here.
    assert erase_via_api(client, secrets[OTHER_SITE], OTHER_SITE, AUTHOR["email"]).get_json()["comments_erased"] == 0

    for bad, field in [({}, "email"), ({"email": 5}, "email"), ({"email": "x@y.z", "name": "n"}, "name")]:
        raw = json.dumps(bad).encode()
        answer = client.post(f"/api/authors/erase?site={SITE}", data=raw, headers=signed_headers(secrets[SITE], raw))
        assert answer.status_code == 400 and {f["field"] for f in answer.get_json()["fields"]} == {field}
    with engine.connect() as connection:
        assert connection.scalar(select(Comment.author_email)) == AUTHOR["email"]


def test_an_oversized_erasure_request_is_413_as_the_openapi_document_says(
    client: FlaskClient, secrets: dict[str, str], engine: Engine
) -> None:
    padding = "x" * client.application.config["MAX_CONTENT_LENGTH"]
    body = json.dumps({"email": "a@b.c", "padding": padding}).encode()
    answer = client.post(f"/api/authors/erase?site={SITE}", data=body, headers=signed_headers(secrets[SITE], body))
    assert answer.status_code == 413
    documented = client.get("/openapi.json").get_json()["paths"]["/api/authors/erase"]["post"]["responses"]
    assert "413" in documented


def test_authors_erase_command_reports_how_many_comments(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, database_url: str, tmp_path: Path
) -> None:
    for number in range(3):
        send(client, secrets[SITE], event("comment.created", f"p-{number}", f"{ORDINARY} {number}", AUTHOR))
    with make_session_factory(engine).begin() as session:
        kept = add_entry(session, "block", "author", AUTHOR["email"], None, None, datetime.now(UTC)).id  # all sites
    env = {"VAR_DIR": str(tmp_path), "DATABASE_URL": database_url, "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING"}
    args = ["authors", "erase", "--site", SITE, "--email", AUTHOR["email"]]

    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"erased the author of 3 comment(s) on {SITE}\n"
        "kept 1 all-sites list entry naming this address (they apply to every site): remove them on the dashboard's "
        f"lists page if the erasure covers them (id {kept})\n"
    )
    # Said once: a new user's report had the same words again on stderr, as a JSON log line.
    assert result.stderr == ""
    assert {entry.split(":")[0] for entry in personal_values_left(engine, PERSONAL)} == {"list_entries.value"}
    unknown = CliRunner().invoke(main, ["authors", "erase", "--site", "nope", "--email", "a@b.c"], env=env)
    assert unknown.exit_code != 0

    # A typo, or a repeat, finds nothing: not silently "done" (the count is still 0, the exit status 0).
    again = CliRunner().invoke(main, args, env=env)
    assert again.exit_code == 0 and again.stdout.startswith(f"erased the author of 0 comment(s) on {SITE}\nkept 1 ")
    assert again.stderr == (
        f"no comment on {SITE} left to erase with e-mail {AUTHOR['email']!r} (case ignored): check it if that "
        "surprises\n"
    )
    for blank in ("", "  "):
        refused = CliRunner().invoke(main, ["authors", "erase", "--site", SITE, "--email", blank], env=env)
        assert refused.exit_code == 2 and "Invalid value for '--email': must not be blank" in refused.stderr


def test_erasure_deletes_the_training_label_of_a_comment_the_site_deleted_only(
    client: FlaskClient, secrets: dict[str, str], engine: Engine
) -> None:
    """The site removed one of the author's reviewed comments: erasure takes its label's copy of the text too.
    The other is still published, so its label (text public on the site) keeps training."""
    secret = secrets[SITE]
    removed = send(client, secret, event("comment.created", "p-1", SPAM, AUTHOR))["id"]
    published = send(client, secret, event("comment.created", "p-2", ORDINARY, AUTHOR))["id"]
    with make_session_factory(engine).begin() as session:
        moderator = session.get_one(Moderator, add_moderator(session, "ana@example.org"))
        now = datetime.now(UTC)
        record_verdict(session, removed, moderator, REJECT, "spam", None, None, now)
        record_verdict(session, published, moderator, APPROVE, None, None, None, now)
    deleted = {"comment_id": "p-1", "site": SITE, "deleted_at": "2026-11-26T12:00:00Z"}
    send(client, secret, {"type": "comment.deleted", "data": deleted})

    def labels() -> dict[int, str]:
        with engine.connect() as connection:
            return {row.comment_id: row.body for row in connection.execute(select(TrainingLabel))}

    assert labels() == {removed: SPAM, published: ORDINARY}  # deletion alone keeps the label

    assert erase_via_api(client, secret, SITE, AUTHOR["email"]).get_json()["comments_erased"] == 2

    assert labels() == {published: ORDINARY}
    with make_session_factory(engine)() as session:
        assert [e.comment.body for e in moderator_examples(session)] == [ORDINARY]


def search_columns(engine: Engine) -> dict[str, tuple[str | None, ...]]:
    columns = (Comment.external_id, Comment.search_text, Comment.search_author, Comment.search_article)
    with engine.connect() as connection:
        return {row[0]: tuple(row[1:]) for row in connection.execute(select(*columns))}


def test_a_word_of_a_replaced_email_goes_when_only_a_normalized_form_of_the_new_name_holds_it(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, active_model: TrainedModel
) -> None:
    """A cold review's test. An edit kept an explaining word of the replaced e-mail ("john" of
    john@quackpills.example) because the new name's normalized form held it ("J0hn" reads "john"), though an
    erasure, matching the values' own words, never finds it there: the word stayed for ever."""
    before = {**OTHER_AUTHOR, "name": "Jan", "email": "john@quackpills.example"}
    text = SPAM + " Ask john for the code."
    comment_id = send(client, secrets[SITE], event("comment.created", "p-norm", text, before))["id"]
    decide(engine, active_model, comment_id)
    decision_id = current_decision_id(engine, comment_id)
    with make_session_factory(engine).begin() as session:
        session.get_one(Decision, decision_id).explanation = {
            "spam": [{"feature": "john", "weight": 0.9}, {"feature": "prescription", "weight": 0.5}],
            "medical_advice": [],
        }
    after = {**before, "name": "J0hn", "email": "jan@elsewhere.example"}
    send(client, secrets[SITE], event("comment.updated", "p-norm", text, after, updated_at="2026-11-26T11:00:00Z"))
    assert [item["feature"] for item in explanation_of(engine, decision_id)["spam"]] == ["prescription"]
    assert erase_via_api(client, secrets[SITE], SITE, after["email"]).get_json()["comments_erased"] == 1
    assert [item["feature"] for item in explanation_of(engine, decision_id)["spam"]] == ["prescription"]


def test_erasure_scrubs_the_search_columns_as_it_does_the_comment(
    client: FlaskClient, secrets: dict[str, str], engine: Engine
) -> None:
    """The dashboard's search reads its own copy of the text and of the author: erasure clears the author's, and
    the text of a comment the site deleted, as it clears them on the comment, or the search still finds them."""
    secret = secrets[SITE]
    private = "Call Zebulon on 0161 496 0999 about the pills"
    send(client, secret, event("comment.created", "p-1", ORDINARY, AUTHOR))
    send(client, secret, event("comment.created", "p-2", private, AUTHOR))
    deleted = {"comment_id": "p-2", "site": SITE, "deleted_at": "2026-11-26T12:00:00Z"}
    send(client, secret, {"type": "comment.deleted", "data": deleted})
    assert search_columns(engine)["p-2"][:2] == (
        private.casefold(),
        "zebulon quackenbush\u2063" + "\u2063".join([AUTHOR["email"].casefold(), AUTHOR["url"]]),
    )

    assert erase_via_api(client, secret, SITE, AUTHOR["email"]).get_json()["comments_erased"] == 2

    article = "massage-therapy\u2063does massage therapy really help back pain?"
    assert search_columns(engine) == {
        "p-1": (ORDINARY.casefold(), None, article),  # still published: its text stays, as on the comment
        "p-2": ("", None, article),
    }


def text_and_label(engine: Engine, comment_id: int) -> tuple[str, bool]:
    with engine.connect() as connection:
        body = connection.scalar(select(Comment.body).where(Comment.id == comment_id))
        labelled = connection.scalar(select(TrainingLabel.id).where(TrainingLabel.comment_id == comment_id))
    return str(body), labelled is not None


def test_a_comment_erased_while_published_loses_its_text_and_label_once_the_site_deletes_it(
    client: FlaskClient, secrets: dict[str, str], engine: Engine
) -> None:
    """Erasure keeps a published comment's text (public on the site) and its label; the site's deletion later is
    when they go, as for a comment deleted before the erasure. Nothing else would remove them: retention skips
    erased comments."""
    secret = secrets[SITE]
    comment_id = send(client, secret, event("comment.created", "p-1", SPAM, AUTHOR))["id"]
    with make_session_factory(engine).begin() as session:
        moderator = session.get_one(Moderator, add_moderator(session, "ana@example.org"))
        record_verdict(session, comment_id, moderator, REJECT, "spam", None, None, datetime.now(UTC))
    assert erase_via_api(client, secret, SITE, AUTHOR["email"]).get_json()["comments_erased"] == 1
    assert text_and_label(engine, comment_id) == (SPAM, True)

    deleted = {"comment_id": "p-1", "site": SITE, "deleted_at": "2026-11-26T12:00:00Z"}
    send(client, secret, {"type": "comment.deleted", "data": deleted})

    assert text_and_label(engine, comment_id) == ("", False)


def test_erasure_by_id_removes_the_kept_text_of_a_comment_erased_then_deleted_before_deletion_forgot_it(
    client: FlaskClient, secrets: dict[str, str], engine: Engine
) -> None:
    """Rows left by a version whose deletion kept an erased comment's text: the id form names that comment and
    removes the text; a repeat erases nothing."""
    comment_id = send(client, secrets[SITE], event("comment.created", "p-1", SPAM, NO_EMAIL))["id"]
    assert erase_ids(engine, ["p-1"]) == Erasure(1, 0)
    with make_session_factory(engine).begin() as session:
        session.execute(update(Comment).where(Comment.id == comment_id).values(status=CommentStatus.DELETED))
    assert text_and_label(engine, comment_id)[0] == SPAM

    assert erase_ids(engine, ["p-1"]) == Erasure(1, 0)
    assert text_and_label(engine, comment_id)[0] == ""
    assert erase_ids(engine, ["p-1"]) == Erasure(0, 0)


# --- erasure by the site's own comment ids -----------------------------------------------------------

NO_EMAIL = {key: value for key, value in AUTHOR.items() if key != "email"}  # the site sent no e-mail
ERASE_FORMS = "exactly one of --email ADDRESS or --comment ID"
TOO_MANY = [f"p-{number}" for number in range(1001)]


def erase_ids_via_api(client: FlaskClient, secret: str, site: str, comment_ids: list[str]) -> Any:
    body = json.dumps({"comment_ids": comment_ids}).encode()
    return client.post(f"/api/authors/erase?site={site}", data=body, headers=signed_headers(secret, body))


def erase_ids(engine: Engine, comment_ids: list[str]) -> Erasure:
    with make_session_factory(engine).begin() as session:
        site = get_site(session, SITE)
        assert site is not None
        return erase_comments_of_site(session, site, comment_ids, datetime.now(UTC))


def authors(engine: Engine) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Each comment's personal fields and ``erased_at``, by site name and the site's comment id."""
    query = select(Site.name, Comment.external_id, *PERSONAL_COLUMNS, Comment.erased_at).join(
        Site, Site.id == Comment.site_id
    )
    with engine.connect() as connection:
        return {(site, comment_id): tuple(rest) for site, comment_id, *rest in connection.execute(query)}


def ips(engine: Engine) -> dict[str, str | None]:
    """The author IP of each of the site's comments: cleared by an erasure, by its comment id."""
    ip = [column.key for column in PERSONAL_COLUMNS].index("author_ip")
    return {comment_id: row[ip] for (site, comment_id), row in authors(engine).items() if site == SITE}


def networks(engine: Engine) -> dict[str, str | None]:
    """Where each of the site's comments came from as the author checks count it, by its comment id."""
    query = select(Comment.external_id, Comment.author_network).join(Site).where(Site.name == SITE)
    with engine.connect() as connection:
        return {external_id: network for external_id, network in connection.execute(query)}


def test_erasure_by_comment_id_reaches_a_comment_without_an_email_and_that_comment_only(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, active_model: TrainedModel
) -> None:
    """No e-mail, nothing for ``erase_author`` to match: the site names the comment by its own id. The same
    author's name on another comment is not chased (a name is not unique), nor is the same id on another site."""
    erased = send(client, secrets[SITE], event("comment.created", "p-1", ADVICE, NO_EMAIL))["id"]
    send(client, secrets[SITE], event("comment.created", "p-2", ORDINARY, NO_EMAIL))
    send(client, secrets[OTHER_SITE], event("comment.created", "p-1", ADVICE, NO_EMAIL, site=OTHER_SITE))
    decide(engine, active_model, erased)
    expected = current_decision_id(engine, erased)
    with make_session_factory(engine).begin() as session:
        moderator = session.get_one(Moderator, add_moderator(session, "ana@example.org"))
        note = f"Checked with {NO_EMAIL['name']} ({NO_EMAIL['ip']}, {NO_EMAIL['user_agent']}): dosing advice"
        record_verdict(session, erased, moderator, REJECT, "medical_advice", note, expected, datetime.now(UTC))
    tables = {entry.split(".")[0] for entry in personal_values_left(engine, PERSONAL)}
    assert {"comments", "decisions", "moderation_actions"} <= tables  # the search finds them: the test can fail
    before, stats = authors(engine), statistics(engine)

    done = erase_ids(engine, ["p-1", "p-1", "no-such-comment"])

    assert done == Erasure(comments=1, list_entries=0)
    after = authors(engine)
    *personal, erased_at = after.pop((SITE, "p-1"))
    assert personal == [None] * len(PERSONAL_COLUMNS) and erased_at is not None
    assert networks(engine) == {"p-1": None, "p-2": NO_EMAIL["ip"]}  # derived from the IP, erased with it
    del before[(SITE, "p-1")]
    assert after == before  # the namesake p-2 and the other site's p-1 keep everything
    # What is left is in those two comments' rows; none in a row derived from the erased comment.
    assert {entry.split(".")[0] for entry in personal_values_left(engine, PERSONAL)} == {"comments"}
    assert statistics(engine) == stats

    # Idempotent: nothing is erased twice (erased_at stays the first erasure's); unknown ids count nothing.
    snapshot = authors(engine)
    assert erase_ids(engine, ["p-1"]) == Erasure(0, 0)
    assert erase_ids(engine, ["p-9", "P-2"]) == Erasure(0, 0)  # ids match exactly, as at intake
    assert authors(engine) == snapshot


def test_erasure_api_by_comment_ids_is_signed_like_the_email_form(
    client: FlaskClient, secrets: dict[str, str], engine: Engine
) -> None:
    for number in (1, 2, 3):
        send(client, secrets[SITE], event("comment.created", f"p-{number}", f"{ORDINARY} {number}", NO_EMAIL))
    body = json.dumps({"comment_ids": ["p-1"]}).encode()
    url = f"/api/authors/erase?site={SITE}"
    wrong = client.post(url, data=body, headers=signed_headers(secrets[OTHER_SITE], body))
    unsigned = client.post(url, data=body, headers={"content-type": "application/json"})
    assert (wrong.status_code, unsigned.status_code) == (401, 401)
    not_json = client.post(
        url, data=body, headers={**signed_headers(secrets[SITE], body), "content-type": "text/plain"}
    )
    assert not_json.status_code == 415 and "comment_ids" in not_json.get_json()["message"]
    # The other site, signing for itself, reaches only its own comments: none of these.
    assert erase_ids_via_api(client, secrets[OTHER_SITE], OTHER_SITE, ["p-1"]).get_json()["comments_erased"] == 0
    assert ips(engine) == dict.fromkeys(["p-1", "p-2", "p-3"], NO_EMAIL["ip"])

    erased = erase_ids_via_api(client, secrets[SITE], SITE, ["p-1", "p-2", "p-2", "no-such-comment"])

    assert erased.status_code == 200, erased.get_data(as_text=True)
    assert erased.get_json() == {
        "site": SITE,
        "comments_erased": 2,
        "list_entries_removed": 0,
        "all_sites_entries_kept": 0,
    }
    assert ips(engine) == {"p-1": None, "p-2": None, "p-3": NO_EMAIL["ip"]}
    assert erase_ids_via_api(client, secrets[SITE], SITE, ["p-1", "p-2"]).get_json()["comments_erased"] == 0


@pytest.mark.parametrize(
    ("bad", "fields"),
    [
        (
            {"email": AUTHOR["email"], "comment_ids": ["p-1"]},
            [{"field": "comment_ids", "message": "send either email or comment_ids, not both"}],
        ),
        ({}, [{"field": "email", "message": "required: send either email or comment_ids"}]),
        ({"comment_ids": None}, [{"field": "email", "message": "required: send either email or comment_ids"}]),
        ({"comment_ids": []}, [{"field": "comment_ids", "message": "must not be empty"}]),
        ({"comment_ids": TOO_MANY}, [{"field": "comment_ids", "message": "must have at most 1000 items"}]),
        (
            {"comment_ids": ["p-1", " ", "x" * 201, "p-\u0000"]},
            [
                {"field": "comment_ids.1", "message": "must not be blank"},
                {"field": "comment_ids.2", "message": "must be at most 200 characters"},
                {"field": "comment_ids.3", "message": "must not contain NUL characters"},
            ],
        ),
    ],
    ids=["both", "neither", "null", "empty", "too-many", "bad-ids"],
)
def test_erasure_api_takes_exactly_one_form_and_bounded_comment_ids(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, bad: dict[str, Any], fields: list[dict[str, str]]
) -> None:
    send(client, secrets[SITE], event("comment.created", "p-1", ORDINARY, AUTHOR))
    raw = json.dumps(bad).encode()

    answer = client.post(f"/api/authors/erase?site={SITE}", data=raw, headers=signed_headers(secrets[SITE], raw))

    assert (answer.status_code, answer.get_json()["error"]) == (400, "invalid_payload")
    assert answer.get_json()["fields"] == fields
    assert ips(engine) == {"p-1": AUTHOR["ip"]}


def test_authors_erase_command_by_comment_ids(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, database_url: str, tmp_path: Path
) -> None:
    for number in range(3):
        send(client, secrets[SITE], event("comment.created", f"p-{number}", f"{ORDINARY} {number}", NO_EMAIL))
    env = {"VAR_DIR": str(tmp_path), "DATABASE_URL": database_url, "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"}
    erase = ["authors", "erase", "--site", SITE]
    args = [*erase, "--comment", "p-0", "--comment", "p-1", "--comment", "no-such-comment"]

    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)

    assert result.exit_code == 0, result.output
    assert result.output == f"erased the author of 2 comment(s) on {SITE}\n"
    assert ips(engine) == {"p-0": None, "p-1": None, "p-2": NO_EMAIL["ip"]}
    for wrong in ([*erase, "--email", "a@b.c", "--comment", "p-2"], erase):
        refused = CliRunner().invoke(main, wrong, env=env)
        assert refused.exit_code == 2 and ERASE_FORMS in refused.output, refused.output
    blank = CliRunner().invoke(main, [*erase, "--comment", " "], env=env)
    assert blank.exit_code == 2 and "must not be blank" in blank.output, blank.output
    assert ips(engine)["p-2"] == NO_EMAIL["ip"]


# --- retention ------------------------------------------------------------------------------------------


def age(engine: Engine, comment_id: int, days: float) -> None:
    """Move a comment and its decisions back in time (the clock itself cannot be)."""
    then = datetime.now(UTC) - timedelta(days=days)
    with make_session_factory(engine).begin() as session:
        session.execute(update(Comment).where(Comment.id == comment_id).values(received_at=then))
        session.execute(update(Decision).where(Decision.comment_id == comment_id).values(created_at=then))
        session.execute(
            update(Comment).where(Comment.id == comment_id, Comment.deleted_at.is_not(None)).values(deleted_at=then)
        )


def test_retention_clears_network_data_then_anonymizes_closed_comments(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, active_model: TrainedModel
) -> None:
    secret = secrets[SITE]
    ids = {}
    author = {**AUTHOR, "url": ""}  # generic thanks with a website is spam (DESIGN 3): these must be approved
    for name, body in [("recent", ORDINARY), ("month", f"{ORDINARY} Really."), ("old", f"{ORDINARY} Truly.")]:
        ids[name] = send(client, secret, event("comment.created", name, body, author))["id"]
    ids["old-held"] = send(client, secret, event("comment.created", "old-held", ADVICE, author))["id"]
    ids["old-deleted"] = send(client, secret, event("comment.created", "old-deleted", SPAM, author))["id"]
    for comment_id in ids.values():
        decide(engine, active_model, comment_id)
    send(
        client,
        secret,
        {
            "type": "comment.deleted",
            "data": {"comment_id": "old-deleted", "site": SITE, "deleted_at": "2026-11-26T12:00:00Z"},
        },
    )
    for name, days in [("month", 40), ("old", 400), ("old-held", 400), ("old-deleted", 400)]:
        age(engine, ids[name], days)

    sessions = make_session_factory(engine)
    done = apply_retention(sessions, datetime.now(UTC), personal_days=30, closed_days=365)

    assert (done.network_cleared, done.closed_anonymized) == (4, 2)
    with engine.connect() as connection:
        rows = {r.external_id: r for r in connection.execute(select(Comment))}
    assert rows["recent"].author_ip == AUTHOR["ip"] and rows["recent"].author_email == AUTHOR["email"]
    assert rows["month"].author_ip is None and rows["month"].author_user_agent is None
    assert (rows["recent"].author_network, rows["month"].author_network) == (AUTHOR["ip"], None)
    assert rows["month"].author_email == AUTHOR["email"]  # closed for only 40 days
    assert rows["old"].author_email is None and rows["old"].author_name is None and rows["old"].erased_at
    assert rows["old-held"].author_email == AUTHOR["email"]  # still waiting for a moderator
    assert rows["old-deleted"].author_email is None and rows["old-deleted"].body == ""
    searched = search_columns(engine)  # the author's copy gone too, and the deleted comment's text
    assert (searched["old"][1], searched["old-deleted"][:2]) == (None, ("", None))
    assert searched["month"][1] is not None

    again = apply_retention(sessions, datetime.now(UTC), personal_days=30, closed_days=365)
    off = apply_retention(sessions, datetime.now(UTC) + timedelta(days=3650), personal_days=0, closed_days=0)
    assert (again.network_cleared, again.closed_anonymized) == (0, 0)
    assert (off.network_cleared, off.closed_anonymized) == (0, 0)


def test_retention_mends_the_networks_an_older_version_leaves_out_of_step(
    client: FlaskClient, secrets: dict[str, str], engine: Engine
) -> None:
    """Processes of the version before migration 0012 serve on while it runs: their erasure clears the address
    but not its network (personal data left behind), their intake stores no network. Each run mends them."""
    erased = send(client, secrets[SITE], event("comment.created", "erased", ORDINARY, AUTHOR))["id"]
    unset = send(client, secrets[SITE], event("comment.created", "unset", ORDINARY, OTHER_AUTHOR))["id"]
    with engine.begin() as connection:  # as that version writes them, without the model's validator
        connection.execute(update(Comment).where(Comment.id == erased).values(author_ip=None, author_email=None))
        connection.execute(update(Comment).where(Comment.id == unset).values(author_network=None))

    done = apply_retention(make_session_factory(engine), datetime.now(UTC), personal_days=0, closed_days=0)

    assert done.networks_mended == 2
    assert networks(engine) == {"erased": None, "unset": OTHER_AUTHOR["ip"]}
    again = apply_retention(make_session_factory(engine), datetime.now(UTC), personal_days=0, closed_days=0)
    assert again.networks_mended == 0


def test_retention_mends_the_search_columns_an_older_version_leaves_out_of_step(
    client: FlaskClient, secrets: dict[str, str], engine: Engine
) -> None:
    """Processes of the version before migration 0013 serve on while it runs: their intake stores no search
    columns (the search cannot find the comment), their erasure clears the author, and a deleted comment's text,
    but not the copies the search reads (personal data left behind). Each run mends them."""
    ids = {
        name: send(client, secrets[SITE], event("comment.created", name, ORDINARY, AUTHOR))["id"]
        for name in ("unset", "erased", "deleted", "in-step")
    }
    author = {f"author_{field}": None for field in ("name", "email", "url", "ip", "user_agent")}
    with engine.begin() as connection:  # as that version writes them, without the model's validators
        unset = {"search_text": None, "search_author": None, "search_article": None}
        connection.execute(update(Comment).where(Comment.id == ids["unset"]).values(unset))
        connection.execute(update(Comment).where(Comment.id == ids["erased"]).values(author))
        connection.execute(update(Comment).where(Comment.id == ids["deleted"]).values(body="", status="deleted"))

    done = apply_retention(make_session_factory(engine), datetime.now(UTC), personal_days=0, closed_days=0)

    assert done.search_mended == 3
    searched = search_columns(engine)
    assert searched["unset"] == searched["in-step"]
    assert searched["erased"] == (ORDINARY.casefold(), None, searched["in-step"][2])
    assert searched["deleted"][:2] == ("", searched["in-step"][1])
    again = apply_retention(make_session_factory(engine), datetime.now(UTC), personal_days=0, closed_days=0)
    assert again.search_mended == 0


def test_retention_commits_batch_by_batch_within_a_time_budget(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, active_model: TrainedModel
) -> None:
    """Review #6: one transaction over the whole backlog held its locks for minutes and, cut off by the task's
    time limit, rolled everything back and started over every hour. Now each batch commits on its own."""
    # Spam, rejected for certain: closed comments are what retention anonymizes, and an ordinary thank-you
    # carrying the author's website sits near the model's reject line (held one run, rejected the next).
    ids = [
        send(client, secrets[SITE], event("comment.created", f"old-{n}", f"{SPAM} {n}", AUTHOR))["id"] for n in range(5)
    ]
    for comment_id in ids:
        decide(engine, active_model, comment_id)
        age(engine, comment_id, 400)
    sessions = make_session_factory(engine)

    first = apply_retention(sessions, datetime.now(UTC), 30, 365, batch=2, budget=timedelta(0))

    # The budget was spent after one batch of each kind; what was done is committed, the rest waits.
    assert (first.network_cleared, first.closed_anonymized) == (2, 2)
    with engine.connect() as connection:
        erased = connection.scalar(select(func.count()).where(Comment.erased_at.is_not(None)))
    assert erased == 2
    rest = apply_retention(sessions, datetime.now(UTC), 30, 365, batch=2)
    assert (rest.network_cleared, rest.closed_anonymized) == (3, 3)
    assert personal_values_left(engine, PERSONAL) == []


def reject_with_note(client: FlaskClient, engine: Engine, comment_id: int, note: str) -> None:
    answer = act(
        client, comment_id, "reject", current_decision_id(engine, comment_id), reason="medical_advice", note=note
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)


def signed_in_moderator(client: FlaskClient, engine: Engine) -> None:
    with make_session_factory(engine).begin() as session:
        add_moderator(session, "ana@example.org")
    assert sign_in(client, "ana@example.org").status_code in {200, 302}


def rejected_with_note(
    client: FlaskClient, secret: str, engine: Engine, model: TrainedModel, external_id: str, author: Any, note: str
) -> int:
    """An advice comment by ``author``, decided, then rejected by a moderator with ``note``; its id."""
    comment_id = int(send(client, secret, event("comment.created", external_id, ADVICE, author))["id"])
    decide(engine, model, comment_id)
    reject_with_note(client, engine, comment_id, note)
    return comment_id


def notes_and_errors(engine: Engine, comment_id: int) -> list[str]:
    """The free text about a comment: moderators' notes on its decisions and actions, its callbacks' errors."""
    with engine.connect() as connection:
        return [
            text
            for column in (Decision.note, ModerationAction.note, CallbackDelivery.last_error)
            for text in connection.scalars(select(column).where(column.class_.comment_id == comment_id))
            if text
        ]


def test_retention_anonymizes_the_ip_it_cleared_earlier_out_of_moderators_notes_too(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, active_model: TrainedModel
) -> None:
    """A cold review's test: the IP and user agent were cleared (RETAIN_PERSONAL_DAYS) by a statement that scrubbed
    nothing, and the anonymization (RETAIN_CLOSED_DAYS), like any erasure, scrubs only the values still on the
    comment: a moderator's note naming the IP kept it for ever."""
    signed_in_moderator(client, engine)
    note = f"same IP {AUTHOR['ip']} as the spammer last week"
    comment_id = rejected_with_note(client, secrets[SITE], engine, active_model, "r-1", AUTHOR, note)
    age(engine, comment_id, 400)  # closed 400 days ago: due for anonymization with the defaults

    done = apply_retention(make_session_factory(engine), datetime.now(UTC), personal_days=30, closed_days=365)

    assert (done.network_cleared, done.closed_anonymized) == (1, 1)
    with engine.connect() as connection:
        assert connection.scalar(select(Comment.erased_at).where(Comment.id == comment_id)) is not None
    # Anonymized "as by an erasure": the IP is gone from the notes, as an erasure takes it.
    assert [n for n in notes_and_errors(engine, comment_id) if AUTHOR["ip"] in n] == []


def test_retention_clearing_the_ip_and_user_agent_scrubs_them_from_notes_and_errors_before_any_erasure(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, active_model: TrainedModel
) -> None:
    """A cold review's test: once retention had cleared the IP, a later erasure no longer knew it, and the notes
    naming it kept it. Clearing them now scrubs them where an erasure would, in the same transaction."""
    signed_in_moderator(client, engine)
    note = f"same IP {AUTHOR['ip']} as {AUTHOR['user_agent']} last week"
    comment_id = rejected_with_note(client, secrets[SITE], engine, active_model, "r-2", AUTHOR, note)
    kept_id = rejected_with_note(client, secrets[SITE], engine, active_model, "r-3", OTHER_AUTHOR, note)
    with engine.begin() as connection:  # a site's error page echoing the request's author
        connection.execute(
            update(CallbackDelivery)
            .where(CallbackDelivery.comment_id.in_([comment_id, kept_id]))
            .values(last_error=f"HTTP 500: no such author {AUTHOR['ip']}")
        )
    age(engine, comment_id, 40)  # the other one is recent: its author's IP stays, and so does the note about it

    done = apply_retention(make_session_factory(engine), datetime.now(UTC), personal_days=30, closed_days=365)

    assert (done.network_cleared, done.closed_anonymized) == (1, 0)
    # The verdict's note (on its decision and its action) and both callbacks' errors (the model's, the verdict's).
    assert sorted(notes_and_errors(engine, comment_id)) == [
        "HTTP 500: no such author [erased]",
        "HTTP 500: no such author [erased]",
        "same IP [erased] as [erased] last week",
        "same IP [erased] as [erased] last week",
    ]
    assert personal_values_left(engine, [AUTHOR["user_agent"]]) == [
        f"decisions.note: {AUTHOR['user_agent'].casefold()}",  # the other comment's: its own author's untouched
        f"moderation_actions.note: {AUTHOR['user_agent'].casefold()}",
    ]
    with engine.connect() as connection:
        assert connection.scalar(select(Comment.author_email).where(Comment.id == comment_id)) == AUTHOR["email"]

    with make_session_factory(engine).begin() as session:
        site = get_site(session, SITE)
        assert site is not None
        assert erase_author(session, site, AUTHOR["email"], datetime.now(UTC)).comments == 1
    assert [t for t in notes_and_errors(engine, comment_id) if AUTHOR["ip"] in t] == []


def test_retention_leaves_whole_a_value_still_on_the_comment_that_holds_the_ip_for_a_later_erasure(
    client: FlaskClient, secrets: dict[str, str], engine: Engine, active_model: TrainedModel
) -> None:
    """A cold review's test: an author's website on their own IP. Clearing the IP scrubbed it out of the middle of
    the URL a note named ("http://[erased]/zebulon-quackenbush"); the erasure after it, looking for the URL whole,
    no longer found it, and the rest of the URL stayed for ever. The URL is kept whole now, as an edit keeps it,
    for the erasure to take."""
    author = {**AUTHOR, "url": f"http://{AUTHOR['ip']}/zebulon-quackenbush"}
    signed_in_moderator(client, engine)
    note = f"also posts as {author['url']} from {AUTHOR['ip']}"
    comment_id = rejected_with_note(client, secrets[SITE], engine, active_model, "r-4", author, note)
    age(engine, comment_id, 40)

    assert apply_retention(make_session_factory(engine), datetime.now(UTC), 30, 365).network_cleared == 1
    assert notes_and_errors(engine, comment_id) == [f"also posts as {author['url']} from [erased]"] * 2

    with make_session_factory(engine).begin() as session:
        site = get_site(session, SITE)
        assert site is not None
        assert erase_author(session, site, AUTHOR["email"], datetime.now(UTC)).comments == 1
    assert notes_and_errors(engine, comment_id) == ["also posts as [erased] from [erased]"] * 2


@pytest.mark.parametrize("how", ["retention", "erasure"])
def test_scrubbing_an_address_leaves_a_longer_address_that_starts_or_ends_with_it(
    how: str, client: FlaskClient, secrets: dict[str, str], engine: Engine, active_model: TrainedModel
) -> None:
    """A review's finding: an address was matched wherever it was not next to a letter or digit, so
    "2001:db8::1" was scrubbed out of "2001:db8::1:5" and "1:2001:db8::1", other addresses, leaving
    "[erased]:5". The author's address goes, also before a port, in brackets, at the end of a sentence and as
    its IPv4-mapped spelling; another address sharing its start or end stays whole."""
    ipv6 = {**AUTHOR, "ip": "2001:db8::1"}
    ipv4 = {**AUTHOR, "ip": "198.51.100.7"}
    signed_in_moderator(client, engine)
    notes = {
        "r-6": "from remote:2001:db8::1, [2001:db8::1]:443 and 2001:db8::1. "
        "Not 2001:db8::1:5, 2001:db8::10, 1:2001:db8::1",
        "r-4": "from 198.51.100.7:8080, ::ffff:198.51.100.7 and 198.51.100.7. Not 198.51.100.77, 1.198.51.100.7",
    }
    ids = {
        external_id: rejected_with_note(client, secrets[SITE], engine, active_model, external_id, author, note)
        for (external_id, note), author in zip(notes.items(), [ipv6, ipv4], strict=True)
    }

    if how == "retention":
        for comment_id in ids.values():
            age(engine, comment_id, 40)
        assert apply_retention(make_session_factory(engine), datetime.now(UTC), 30, 365).network_cleared == 2
    else:
        with make_session_factory(engine).begin() as session:
            site = get_site(session, SITE)
            assert site is not None
            assert erase_author(session, site, AUTHOR["email"], datetime.now(UTC)).comments == 2

    assert (
        notes_and_errors(engine, ids["r-6"])
        == ["from remote:[erased], [[erased]]:443 and [erased]. Not 2001:db8::1:5, 2001:db8::10, 1:2001:db8::1"] * 2
    )
    assert (
        notes_and_errors(engine, ids["r-4"])
        == ["from [erased]:8080, ::ffff:[erased] and [erased]. Not 198.51.100.77, 1.198.51.100.7"] * 2
    )


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        # a label or a word whose letters are hex digits is no group of a longer address (a review's finding)
        ("IPv6:2001:db8::1, source:2001:db8::1", "IPv6:[erased], source:[erased]"),
        ("seen at 2001:db8::1:details follow", "seen at [erased]:details follow"),
        # whole groups are: these are other addresses
        ("2001:db8::1:5 2001:db8::1:beef abcd:2001:db8::1 ::2001:db8::1", None),
    ],
)
def test_an_ipv6_address_is_told_from_a_longer_one_by_whole_hex_groups(text: str, scrubbed: str | None) -> None:
    assert privacy._scrubber(["2001:db8::1"])(text) == (scrubbed if scrubbed is not None else text)


def test_beat_runs_retention_with_the_configured_limits(settings: Settings) -> None:
    configured = settings.model_copy(update={"retain_personal_days": 7, "retain_closed_days": 0})
    schedule = build_celery(configured).conf.beat_schedule
    entry = schedule["apply-retention"]
    assert entry["task"] == "moderation.apply_retention"
    assert entry["kwargs"] == {"personal_days": 7, "closed_days": 0}
    assert Settings().retain_personal_days == 30 and Settings().retain_closed_days == 365


@pytest.mark.slow
def test_a_real_worker_runs_the_retention_task(
    settings: Settings, tmp_path: Path, client: FlaskClient, secrets: dict[str, str], engine: Engine
) -> None:
    from tests.support.processes import Stack, wait_until
    from workers.app import RETENTION_TASK

    comment_id = send(client, secrets[SITE], event("comment.created", "old", ORDINARY, AUTHOR))["id"]
    age(engine, comment_id, 40)
    stack = Stack(settings, tmp_path)
    try:
        stack.worker()
        build_celery(settings).send_task(RETENTION_TASK, kwargs={"personal_days": 30, "closed_days": 0})

        def cleared() -> bool:
            with engine.connect() as connection:
                return connection.scalar(select(Comment.author_ip).where(Comment.id == comment_id)) is None

        wait_until(cleared, timeout=60, what="the retention task")
        with engine.connect() as connection:
            assert connection.scalar(select(Comment.author_email).where(Comment.id == comment_id)) == AUTHOR["email"]
    finally:
        stack.stop_all()
