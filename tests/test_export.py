"""`moderation export`: decisions and moderator verdicts as JSON lines or CSV, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session

from models.db import make_session_factory
from models.entities import Comment, Decision, Moderator
from moderation.export import COLUMNS, STREAM_ROWS, ExportQuery, _csv_cell, export_rows, write_export
from moderation.intake import body_fingerprint
from moderation.review import record_verdict
from moderation.sites import create_site
from server.cli import main
from server.cli.export import export as export_command

HOSTILE = '=HYPERLINK("http://evil.example","click") take 800mg ibuprofen'


def add_comment(session: Session, site_id: int, external_id: str, body: str, outcome: str, **author: str) -> int:
    comment = Comment(
        site_id=site_id,
        external_id=external_id,
        article_id="massage-therapy",
        body=body,
        body_fingerprint=body_fingerprint(body),
        status={"approve": "approved", "hold": "held", "reject": "rejected"}[outcome],
        author_name=author.get("name", "Jan"),
        author_email=author.get("email", "jan@example.org"),
        author_ip="203.0.113.9",
    )
    session.add(comment)
    session.flush()
    session.add(
        Decision(
            comment_id=comment.id,
            outcome=outcome,
            spam_score=0.02,
            advice_score=0.97 if outcome == "hold" else 0.01,
            reasons=["medical_advice"] if outcome == "hold" else [],
            model_version="test-model",
            decided_by="model",
        )
    )
    session.flush()
    return comment.id


@pytest.fixture
def stored(engine: Engine) -> dict[str, int]:
    """Two sites; a held comment a moderator rejected as medical advice, an approved one, another site's one."""
    with make_session_factory(engine).begin() as session:
        site, _ = create_site(session, "backpain-advisor")
        other, _ = create_site(session, "other-site")
        moderator = Moderator(email="ana@example.org", password_hash="x", role="moderator")
        session.add(moderator)
        session.flush()
        held = add_comment(session, site.id, "c-1", HOSTILE, "hold")
        approved = add_comment(session, site.id, "c-2", "Thanks, very useful article.", "approve")
        elsewhere = add_comment(session, other.id, "c-3", "Another site's comment.", "approve")
        current = session.scalar(select(Decision.id).where(Decision.comment_id == held))
        record_verdict(session, held, moderator, "reject", "medical_advice", "dosing", current, datetime.now(UTC))
    return {"held": held, "approved": approved, "elsewhere": elsewhere}


def run(database_url: str, tmp_path: Path, *args: str) -> Result:
    env = {"VAR_DIR": str(tmp_path), "DATABASE_URL": database_url, "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"}
    return CliRunner().invoke(main, ["export", *args], env=env, catch_exceptions=False)


def test_jsonl_to_stdout_has_every_decision_and_the_verdict_with_its_label(
    stored: dict[str, int], database_url: str, tmp_path: Path
) -> None:
    result = run(database_url, tmp_path, "--no-progress")

    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [tuple(row) for row in rows] == [COLUMNS] * 4
    assert [(r["external_id"], r["decision"], r["decided_by"], r["current"]) for r in rows] == [
        ("c-1", "hold", "model", False),
        ("c-2", "approve", "model", True),
        ("c-3", "approve", "model", True),
        ("c-1", "reject", "moderator", True),
    ]
    verdict = rows[-1]
    assert verdict["moderator"] == "ana@example.org" and verdict["reasons"] == ["medical_advice"]
    assert (verdict["label_spam"], verdict["label_medical_advice"]) == (None, True)
    assert verdict["body"] == HOSTILE and verdict["comment_status"] == "rejected"
    assert rows[0]["label_medical_advice"] is None  # the model's row carries no moderator label
    assert "exported 4 row(s)" in result.stderr
    # Nothing about the author is exported.
    assert "jan@example.org" not in result.stdout and "203.0.113.9" not in result.stdout


def test_csv_to_a_file_filtered_by_site_and_date_with_a_progress_bar(
    stored: dict[str, int], database_url: str, engine: Engine, tmp_path: Path
) -> None:
    with make_session_factory(engine).begin() as session:
        old = datetime.now(UTC) - timedelta(days=10)
        session.execute(update(Decision).where(Decision.comment_id == stored["approved"]).values(created_at=old))
    output = tmp_path / "verdicts.csv"
    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")

    result = run(
        database_url,
        tmp_path,
        "--format",
        "csv",
        "--output",
        str(output),
        "--site",
        "backpain-advisor",
        "--since",
        since,
    )

    assert result.exit_code == 0, result.output
    assert "export" in result.stderr and "2/2" in result.stderr  # tqdm's bar, on stderr
    rows = list(csv.DictReader(io.StringIO(output.read_text())))
    assert tuple(rows[0]) == COLUMNS
    assert [(r["external_id"], r["decision"]) for r in rows] == [("c-1", "hold"), ("c-1", "reject")]
    # A cell a spreadsheet would run as a formula is defused; lists are ;-joined; booleans are words.
    assert rows[1]["body"] == "'" + HOSTILE
    assert rows[1]["reasons"] == "medical_advice" and rows[1]["current"] == "true"
    assert rows[1]["label_medical_advice"] == "true" and rows[1]["label_spam"] == ""


def test_since_takes_a_utc_time_written_with_z(stored: dict[str, int], database_url: str, tmp_path: Path) -> None:
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = run(database_url, tmp_path, "--no-progress", "--since", since)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 4


SINCE_FORMS_IN_WORDS = (
    "write a date, 2026-12-01, or a date and time to the second, 2026-12-01T09:30:00 "
    "(a space instead of the T, and a Z at the end, are taken too)"
)


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", "2026-12-01T09:30", "01/12/2026"])
def test_a_since_that_is_no_date_says_the_accepted_forms_in_words(tmp_path: Path, bad: str) -> None:
    """A new user's report: the error listed click's strftime patterns ('%Y-%m-%d', ...)."""
    result = run("", tmp_path, "--since", bad)
    assert result.exit_code == 2
    assert f"Invalid value for '--since': {bad!r} is not a UTC date or time: {SINCE_FORMS_IN_WORDS}" in result.stderr
    assert "%" not in result.stderr
    assert "--since DATE" in run("", tmp_path, "--help").stdout


@pytest.mark.parametrize(
    ("given", "read"),
    [
        ("2026-12-01", datetime(2026, 12, 1)),
        ("2026-12-01T09:30:00", datetime(2026, 12, 1, 9, 30)),
        ("2026-12-01 09:30:00", datetime(2026, 12, 1, 9, 30)),
        ("2026-12-01T09:30:00Z", datetime(2026, 12, 1, 9, 30)),
        ("2026-12-01 09:30:00Z", datetime(2026, 12, 1, 9, 30)),
    ],
)
def test_since_takes_the_forms_it_always_took(given: str, read: datetime) -> None:
    since = next(param for param in export_command.params if param.name == "since")
    assert since.type.convert(given, since, None) == read


def test_an_output_file_that_cannot_be_written_is_a_clear_error(
    stored: dict[str, int], database_url: str, tmp_path: Path
) -> None:
    result = run(database_url, tmp_path, "--output", str(tmp_path / "no-such-dir" / "x.csv"))
    assert result.exit_code == 1
    assert "cannot write" in result.output and "no-such-dir" in result.output
    assert "Traceback" not in result.output


def test_only_the_current_decision_carries_the_text_and_no_row_names_a_blocked_author(
    stored: dict[str, int], engine: Engine
) -> None:
    """Review #7 and #8: an earlier decision judged an earlier text, and ``author:<e-mail>`` names a person."""
    edited = "Edited: I see a physiotherapist now."
    with make_session_factory(engine).begin() as session:
        session.execute(update(Comment).where(Comment.id == stored["held"]).values(body=edited))
        session.execute(
            update(Decision)
            .where(Decision.comment_id == stored["approved"])
            .values(reasons=["blocked_term", "author:jan@example.org"])
        )
    with make_session_factory(engine)() as session:
        rows = list(export_rows(session, ExportQuery()))

    assert [(r["external_id"], r["current"], r["body"]) for r in rows if r["external_id"] == "c-1"] == [
        ("c-1", False, None),
        ("c-1", True, edited),
    ]
    approved = next(r for r in rows if r["external_id"] == "c-2")
    assert approved["reasons"] == ["blocked_term", "author_blocked"]
    assert "jan@example.org" not in json.dumps(rows)


def test_no_body_and_unknown_site(stored: dict[str, int], database_url: str, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in run(database_url, tmp_path, "--no-body", "--no-progress").stdout.splitlines()]
    assert rows and all(row["body"] is None for row in rows)
    unknown = run(database_url, tmp_path, "--site", "nope")
    assert unknown.exit_code != 0


def test_export_streams_plain_rows(stored: dict[str, int], engine: Engine) -> None:
    """Rows are read as plain values through a yield_per cursor: nothing accumulates in the session.

    Review #13: fetching everything with .all() passed the old version of this test; the statement's own
    options and, on PostgreSQL, the server-side (named) cursor show that rows really stream."""
    options: list[dict[str, object]] = []
    cursors: list[str] = []

    def seen_cursor(_conn: object, cursor: object, *_args: object) -> None:
        cursors.append(type(cursor).__name__)

    event.listen(engine, "before_cursor_execute", seen_cursor)
    with make_session_factory(engine)() as session:
        event.listen(session, "do_orm_execute", lambda state: options.append(dict(state.execution_options)))
        rows = export_rows(session, ExportQuery())
        first = next(rows)
        assert options and options[0].get("yield_per") == STREAM_ROWS
        if engine.dialect.name == "postgresql":
            assert cursors[-1] == "ServerCursor"
        event.remove(engine, "before_cursor_execute", seen_cursor)
        assert len(session.identity_map) == 0
        seen = [first["decision_id"], *(row["decision_id"] for row in rows)]
        assert write_export(session, ExportQuery(), io.StringIO(), "jsonl") == 4
        with pytest.raises(ValueError):
            write_export(session, ExportQuery(), io.StringIO(), "xml")
    assert seen == sorted(seen) and len(seen) == 4


@pytest.mark.parametrize(
    "text",
    [
        "=1+1",
        ' =HYPERLINK("http://evil.example")',
        "\n=cmd",
        '\uff1dHYPERLINK("http://evil.example")',
        "\t+1",
        "@SUM(A1)",
    ],
)
def test_a_cell_a_spreadsheet_would_run_as_a_formula_is_defused(text: str) -> None:
    """Spreadsheets skip leading spaces and line breaks, and some read the full-width sign as "=" (a security
    review): those start a formula as much as a plain "=" does."""
    assert _csv_cell(text) == "'" + text


@pytest.mark.parametrize("text", ["Massage helped.", "a = b", "", "800mg - twice a day"])
def test_ordinary_cells_are_left_as_they_are(text: str) -> None:
    assert _csv_cell(text) == text


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_an_output_file_that_fills_up_is_a_clear_error(
    stored: dict[str, int], database_url: str, tmp_path: Path
) -> None:
    """A full disk while writing, not only a file that cannot be opened, is one line (a cold review's test)."""
    result = run(database_url, tmp_path, "--format", "csv", "--no-progress", "--output", "/dev/full")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["Error: cannot write /dev/full: No space left on device"]
