"""outbox rows count the runs that relayed work led to, one per publish by the relay

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Adding a column with a constant default rewrites nothing on PostgreSQL 11 and later: no long lock.
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tries", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch_op.add_column(sa.Column("counted_attempt", sa.Integer(), server_default=sa.text("0"), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("counted_attempt")
        batch_op.drop_column("tries")
