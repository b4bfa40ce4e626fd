"""comment lifecycle: edits, deletions, erasure

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("comments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("site_updated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("revision", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_comments_deleted_at"), ["deleted_at"], unique=False)
    # Comments stored before this revision: the site's timestamp of their only version is created_at.
    op.execute("UPDATE comments SET site_updated_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("comments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_comments_deleted_at"))
        batch_op.drop_column("erased_at")
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("revision")
        batch_op.drop_column("site_updated_at")
