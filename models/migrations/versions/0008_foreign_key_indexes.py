"""index every foreign key column that had none

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Deleting a row (a comment by retention or erasure, its decisions by cascade, a moderator) makes the database
# find the rows that point at it; without an index that is a full scan of the referring table for every row
# deleted, and webhook_receipts grows by one row per delivery.
INDEXED = (
    ("webhook_receipts", "comment_id"),
    ("moderation_actions", "before_decision_id"),
    ("moderation_actions", "after_decision_id"),
    ("list_entries", "created_by"),
    ("training_labels", "moderator_id"),
)


def upgrade() -> None:
    for table, column in INDEXED:
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column], unique=False)


def downgrade() -> None:
    for table, column in reversed(INDEXED):
        op.drop_index(op.f(f"ix_{table}_{column}"), table_name=table)
