"""sites remember who paused their callbacks

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: a site whose callbacks were off before this revision was turned off by its own 410.
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callbacks_paused_by", sa.String(length=320), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_column("callbacks_paused_by")
