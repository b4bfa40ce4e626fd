"""at most one classify outbox row per comment, enforced by a partial unique index

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "uq_outbox_classify_per_comment"
ONLY_CLASSIFY = sa.text("kind = 'classify'")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Writers add classify work under the comment's lock, so none should be doubled; whatever is goes
        # before the index. The outbox holds only waiting work (a few rows), so this lock is brief.
        op.execute("LOCK TABLE outbox IN SHARE ROW EXCLUSIVE MODE")
    # The oldest row of a comment's stays: it carries the relay's publishes and the counted runs.
    op.execute(
        "DELETE FROM outbox WHERE kind = 'classify' AND id NOT IN"
        " (SELECT min(id) FROM outbox WHERE kind = 'classify' GROUP BY comment_id)"
    )
    op.create_index(
        INDEX, "outbox", ["comment_id"], unique=True, sqlite_where=ONLY_CLASSIFY, postgresql_where=ONLY_CLASSIFY
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="outbox")
