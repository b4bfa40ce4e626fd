"""comments keep their text, author and article as the dashboard's search reads them

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

import re
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("search_text", "search_author", "search_article")
OUT_OF_STEP = "ix_comments_search_out_of_step"  # the few rows older processes leave; retention mends them
OUT_OF_STEP_WHERE = sa.text(
    "search_text IS NULL OR search_article IS NULL OR (body = '' AND search_text <> '')"
    " OR ((author_name IS NULL AND author_email IS NULL AND author_url IS NULL) <> (search_author IS NULL))"
)
BATCH = 1000
READ = ("body", "author_name", "author_email", "author_url", "article_id", "article_title")
comments = sa.table("comments", sa.column("id", sa.Integer), *(sa.column(name, sa.Text) for name in (*READ, *COLUMNS)))


def upgrade() -> None:
    # Nullable, no default: a moment's lock on PostgreSQL, no table rewrite; and the processes of the version
    # before, serving on meanwhile, insert rows without them. A run that stopped half-way (each batch below
    # commits) finds some of the columns there and the rows it filled filled.
    present = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("comments")}
    for name in COLUMNS:
        if name not in present:
            op.add_column("comments", sa.Column(name, sa.Text(), nullable=True))
    # Batch by batch, each its own transaction, on SQLite too: intake and workers wait for one batch at most,
    # never for the whole table, and what is filled stays filled.
    with op.get_context().autocommit_block():
        _fill_in_batches()
        if op.get_bind().dialect.name != "postgresql":
            op.create_index(OUT_OF_STEP, "comments", ["id"], sqlite_where=OUT_OF_STEP_WHERE, if_not_exists=True)
            return
        # Built without blocking writes; a concurrent build that failed leaves an invalid index of that name.
        op.drop_index(OUT_OF_STEP, table_name="comments", postgresql_concurrently=True, if_exists=True)
        op.create_index(
            OUT_OF_STEP, "comments", ["id"], postgresql_where=OUT_OF_STEP_WHERE, postgresql_concurrently=True
        )


def _fill_in_batches() -> None:
    connection = op.get_bind()
    # SQLite: the write lock from the batch's read to its write, so no writer changes a row in between (a
    # deferred one could not write after another writer committed). PostgreSQL: the batch's rows locked, FOR
    # UPDATE below, for the same reason; new comments go on being inserted meanwhile.
    begin = "BEGIN IMMEDIATE" if connection.dialect.name == "sqlite" else "BEGIN"
    after = 0
    while True:
        connection.exec_driver_sql(begin)
        rows = connection.execute(
            sa.select(comments.c.id, *(comments.c[name] for name in READ))
            .where(comments.c.id > after, comments.c.search_text.is_(None))
            .order_by(comments.c.id)
            .limit(BATCH)
            .with_for_update()
        ).all()
        if rows:
            connection.execute(
                sa.update(comments)
                .where(comments.c.id == sa.bindparam("row_id"))
                .values({name: sa.bindparam(name) for name in COLUMNS}),
                [
                    {
                        "row_id": row_id,
                        "search_text": _searchable(body),
                        "search_author": _fields(name, email, url),
                        "search_article": _fields(article_id, title),
                    }
                    for row_id, body, name, email, url, article_id, title in rows
                ],
            )
        connection.exec_driver_sql("COMMIT")
        if not rows:
            return
        after = rows[-1][0]


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(OUT_OF_STEP, table_name="comments", postgresql_concurrently=True, if_exists=True)
    else:
        op.drop_index(OUT_OF_STEP, table_name="comments", if_exists=True)
    with op.batch_alter_table("comments", schema=None) as batch_op:  # SQLite before 3.35 has no DROP COLUMN
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)


# Written out here rather than imported: a migration must do what it did when it was written, whatever the
# application's code becomes (models.text.visible, searchable and searchable_fields, as of 2026-12-08).
INVISIBLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b\u200c\u200e\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufeff\uffa0\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
)
EMOJI_PARTS = "\u200d\ufe00-\ufe0f"
INVISIBLE_RE = re.compile(f"[{INVISIBLE}]+|(?<=[\\x00-\\x7f\\w{INVISIBLE}])[{INVISIBLE}{EMOJI_PARTS}]+")
SEPARATOR = "\u2063"


def _searchable(text: str) -> str:
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", INVISIBLE_RE.sub("", text)).casefold()


def _fields(*fields: str | None) -> str | None:
    if all(field is None for field in fields):
        return None
    return SEPARATOR.join(_searchable(field or "") for field in fields)
