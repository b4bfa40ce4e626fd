"""Export decisions and moderator verdicts as JSON lines or CSV, streamed from the database.

One row per decision (model or moderator), oldest first. No author data is exported: the rows serve audits
and retraining elsewhere, which need the text, the scores and the verdicts, not who wrote the comment.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session
from tqdm import tqdm

from models.entities import Comment, Decision, Site, TrainingLabel
from moderation.lists import BLOCKED_AUTHOR
from moderation.review import moderator_email

FORMATS = ("jsonl", "csv")
COLUMNS = (
    "decision_id",
    "comment_id",
    "site",
    "external_id",
    "article_id",
    "decided_at",
    "decision",
    "reasons",
    "spam_score",
    "medical_advice_score",
    "decided_by",
    "moderator",
    "model_version",
    "current",
    "comment_status",
    "label_spam",
    "label_medical_advice",
    "body",
)
STREAM_ROWS = 500
AUTHOR_BLOCKED = "author_blocked"
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection): comment text is hostile.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Spreadsheets also skip leading spaces and line breaks before a formula, and some read full-width signs as
# the ASCII ones.
FULL_WIDTH_FORMULA_STARTS = ("\uff1d", "\uff0b", "\uff0d", "\uff20")


@dataclass(frozen=True, slots=True)
class ExportQuery:
    site_id: int | None = None
    since: datetime | None = None
    with_body: bool = True


def _statement(query: ExportQuery) -> Select[Any]:
    """Plain columns, no ORM objects: a long export keeps no identity map growing in memory."""
    statement: Select[Any] = (
        select(
            Decision.id.label("decision_id"),
            Comment.id.label("comment_id"),
            Site.name.label("site"),
            Comment.external_id,
            Comment.article_id,
            Decision.created_at.label("decided_at"),
            Decision.outcome.label("decision"),
            Decision.reasons,
            Decision.spam_score,
            Decision.advice_score.label("medical_advice_score"),
            Decision.decided_by,
            Decision.model_version,
            Decision.is_current.label("current"),
            Comment.status.label("comment_status"),
            TrainingLabel.spam.label("label_spam"),
            TrainingLabel.medical_advice.label("label_medical_advice"),
            Comment.body,
        )
        .join(Comment, Comment.id == Decision.comment_id)
        .join(Site, Site.id == Comment.site_id)
        .outerjoin(TrainingLabel, TrainingLabel.comment_id == Comment.id)
    )
    if query.site_id is not None:
        statement = statement.where(Comment.site_id == query.site_id)
    if query.since is not None:
        statement = statement.where(Decision.created_at >= query.since)
    return statement


def count_rows(session: Session, query: ExportQuery) -> int:
    return int(session.scalar(select(func.count()).select_from(_statement(query).subquery())) or 0)


def export_rows(session: Session, query: ExportQuery) -> Iterator[dict[str, Any]]:
    """The rows, oldest decision first, fetched ``STREAM_ROWS`` at a time (a server-side cursor on PostgreSQL)."""
    statement = _statement(query).order_by(Decision.id).execution_options(yield_per=STREAM_ROWS)
    for found in session.execute(statement).mappings():
        row = dict(found)
        by_moderator = row["decided_by"] != "model"
        # The training label is the comment's latest verdict: it belongs on the row of that verdict only.
        labelled = by_moderator and row["current"]
        row["decided_at"] = row["decided_at"].isoformat()
        row["reasons"] = [_exported_reason(reason) for reason in row["reasons"] or []]
        row["decided_by"] = "moderator" if by_moderator else "model"
        row["moderator"] = moderator_email(found["decided_by"]) if by_moderator else None
        row["label_spam"] = row["label_spam"] if labelled else None
        row["label_medical_advice"] = row["label_medical_advice"] if labelled else None
        # The comment keeps only its current text: an earlier decision may have judged an earlier text.
        row["body"] = row["body"] if query.with_body and row["current"] else None
        yield {name: row[name] for name in COLUMNS}


def _exported_reason(reason: str) -> str:
    # "author:<e-mail or name>" names the block-listed author; the export carries no author data.
    return AUTHOR_BLOCKED if reason.startswith(BLOCKED_AUTHOR) else reason


def write_export(
    session: Session, query: ExportQuery, out: TextIO, fmt: str = "jsonl", progress: TextIO | None = None
) -> int:
    """Write every row to ``out``; a tqdm bar goes to ``progress`` when given. Returns the number of rows."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    rows: Any = export_rows(session, query)
    if progress is not None:
        rows = tqdm(rows, total=count_rows(session, query), file=progress, unit=" rows", desc="export")
    return _write_csv(rows, out) if fmt == "csv" else _write_jsonl(rows, out)


def _write_jsonl(rows: Iterator[dict[str, Any]], out: TextIO) -> int:
    written = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        written += 1
    return written


def _write_csv(rows: Iterator[dict[str, Any]], out: TextIO) -> int:
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    written = 0
    for row in rows:
        writer.writerow({name: _csv_cell(value) for name, value in row.items()})
        written += 1
    return written


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        value = ";".join(str(item) for item in value)
    if isinstance(value, str) and value.lstrip().startswith(FORMULA_STARTS + FULL_WIDTH_FORMULA_STARTS):
        return "'" + value
    return value
