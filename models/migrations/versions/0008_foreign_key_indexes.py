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
    if op.get_bind().dialect.name != "postgresql":
        # SQLite commits each CREATE INDEX by itself: after a failure half-way (a locked database), the next
        # `moderation migrate` finds some of them there.
        for table, column in INDEXED:
            op.create_index(op.f(f"ix_{table}_{column}"), table, [column], unique=False, if_not_exists=True)
        return
    # Built without blocking writes: the running processes keep taking webhooks and verdicts meanwhile
    # (a plain CREATE INDEX would hold every insert into these tables until all five are built).
    with op.get_context().autocommit_block():
        for table, column in INDEXED:
            name = op.f(f"ix_{table}_{column}")
            # A concurrent build that failed leaves an invalid index of that name: built again.
            op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
            op.create_index(name, table, [column], unique=False, postgresql_concurrently=True)


def downgrade() -> None:
    concurrently = op.get_bind().dialect.name == "postgresql"
    if not concurrently:
        for table, column in reversed(INDEXED):
            op.drop_index(op.f(f"ix_{table}_{column}"), table_name=table, if_exists=True)
        return
    with op.get_context().autocommit_block():
        for table, column in reversed(INDEXED):
            op.drop_index(op.f(f"ix_{table}_{column}"), table_name=table, postgresql_concurrently=True, if_exists=True)
