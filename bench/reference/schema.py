"""The bare reference's two tables, beside the service's in the benchmark's database."""

from __future__ import annotations

from sqlalchemy import Engine, text

TASK_NAME = "reference.classify"
TASK_QUEUE = "reference"

# bench_stored_at: clock_timestamp() at insert, the same end-to-end clock the harness adds to `decisions`.
TABLES = """
CREATE TABLE IF NOT EXISTS ref_comments (
    id BIGSERIAL PRIMARY KEY,
    external_id TEXT NOT NULL,
    article_id TEXT NOT NULL,
    body TEXT NOT NULL,
    author_name TEXT,
    author_email TEXT,
    author_url TEXT,
    author_ip TEXT,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS ref_decisions (
    id BIGSERIAL PRIMARY KEY,
    comment_id BIGINT NOT NULL REFERENCES ref_comments (id),
    outcome TEXT NOT NULL,
    spam_score DOUBLE PRECISION NOT NULL,
    advice_score DOUBLE PRECISION NOT NULL,
    model_version TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    bench_stored_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS ix_ref_decisions_comment ON ref_decisions (comment_id);
"""

INSERT_COMMENT = """
INSERT INTO ref_comments (external_id, article_id, body, author_name, author_email, author_url, author_ip, received_at)
VALUES (:external_id, :article_id, :body, :author_name, :author_email, :author_url, :author_ip, :received_at)
RETURNING id
"""

INSERT_DECISION = """
INSERT INTO ref_decisions (comment_id, outcome, spam_score, advice_score, model_version, created_at)
VALUES (:comment_id, :outcome, :spam_score, :advice_score, :model_version, :created_at)
"""


def create_tables(engine: Engine) -> None:
    with engine.begin() as connection:
        for statement in TABLES.split(";"):
            if statement.strip():
                connection.execute(text(statement))
