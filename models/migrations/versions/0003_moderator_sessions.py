"""moderator sessions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

moderators = sa.table("moderators", sa.column("id", sa.Integer()), sa.column("session_token", sa.String(64)))


def upgrade() -> None:
    # A dashboard session is valid only while the token it carries matches the account's (see Moderator).
    with op.batch_alter_table("moderators", schema=None) as batch_op:
        batch_op.add_column(sa.Column("session_token", sa.String(length=64), nullable=True))
    # Each existing account gets its own random token: sessions signed before the upgrade end (they carry none).
    connection = op.get_bind()
    for (moderator_id,) in connection.execute(sa.select(moderators.c.id)).all():
        connection.execute(
            moderators.update().where(moderators.c.id == moderator_id).values(session_token=secrets.token_urlsafe(32))
        )
    with op.batch_alter_table("moderators", schema=None) as batch_op:
        batch_op.alter_column("session_token", existing_type=sa.String(length=64), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("moderators", schema=None) as batch_op:
        batch_op.drop_column("session_token")
