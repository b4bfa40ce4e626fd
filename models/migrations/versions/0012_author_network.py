"""comments keep the network an author writes from (an IPv6 /64), and author IPs in one spelling

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import ipaddress
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_comments_author_network"
OUT_OF_STEP = "ix_comments_network_out_of_step"  # the few rows older processes leave; retention mends them
OUT_OF_STEP_WHERE = sa.text("(author_ip IS NULL) <> (author_network IS NULL)")
BATCH = 1000
comments = sa.table(
    "comments", sa.column("id", sa.Integer), sa.column("author_ip", sa.String), sa.column("author_network", sa.String)
)


def upgrade() -> None:
    # Nullable, no default: a moment's lock on PostgreSQL, no table rewrite. A run that stopped half-way (the
    # steps below commit as they go) finds the column there.
    if "author_network" not in {column["name"] for column in sa.inspect(op.get_bind()).get_columns("comments")}:
        op.add_column("comments", sa.Column("author_network", sa.String(length=45), nullable=True))
    if op.get_bind().dialect.name != "postgresql":
        _fill_in_batches()
        op.create_index(INDEX, "comments", ["author_network"], unique=False, if_not_exists=True)
        op.create_index(OUT_OF_STEP, "comments", ["id"], sqlite_where=OUT_OF_STEP_WHERE, if_not_exists=True)
        return
    # Outside a transaction (each row's update commits by itself), and the index built without blocking writes:
    # the running processes keep taking webhooks and verdicts meanwhile.
    with op.get_context().autocommit_block():
        _fill_in_batches()
        # A concurrent build that failed leaves an invalid index of that name: built again.
        for name, columns, where in ((INDEX, ["author_network"], None), (OUT_OF_STEP, ["id"], OUT_OF_STEP_WHERE)):
            op.drop_index(name, table_name="comments", postgresql_concurrently=True, if_exists=True)
            op.create_index(name, "comments", columns, postgresql_where=where, postgresql_concurrently=True)


def _fill_in_batches() -> None:
    """Each stored address in intake's spelling, with its network; in batches by primary key."""
    connection = op.get_bind()
    after = 0
    while True:
        rows = connection.execute(
            sa.select(comments.c.id, comments.c.author_ip)
            .where(comments.c.id > after, comments.c.author_ip.is_not(None))
            .order_by(comments.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        # Only where the address is still the one read: an erasure, retention or edit by a process of the
        # version before, committed since, is not undone.
        connection.execute(
            sa.update(comments)
            .where(comments.c.id == sa.bindparam("row_id"), comments.c.author_ip == sa.bindparam("read"))
            .values(author_ip=sa.bindparam("ip"), author_network=sa.bindparam("network")),
            [
                {"row_id": row_id, "read": address, "ip": spelled, "network": _network(spelled)}
                for row_id, address in rows
                for spelled in [_one_spelling(address)]
            ],
        )
        after = rows[-1][0]


def downgrade() -> None:
    concurrently = op.get_bind().dialect.name == "postgresql"
    if not concurrently:
        op.drop_index(OUT_OF_STEP, table_name="comments", if_exists=True)
        op.drop_index(INDEX, table_name="comments", if_exists=True)
        with op.batch_alter_table("comments", schema=None) as batch_op:  # SQLite before 3.35 has no DROP COLUMN
            batch_op.drop_column("author_network")
        return
    with op.get_context().autocommit_block():
        for name in (OUT_OF_STEP, INDEX):
            op.drop_index(name, table_name="comments", postgresql_concurrently=True, if_exists=True)
    op.drop_column("comments", "author_network")


# Written out here rather than imported: a migration must do what it did when it was written, whatever the
# application's code becomes (webhooks.schemas spells new addresses so; models.entities.author_network).
def _one_spelling(address: str) -> str:
    """The address as intake stores it since 2026-12-07: IPv6 compressed, an IPv4-mapped one as IPv4."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def _network(address: str) -> str:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    return str(ipaddress.ip_network(f"{parsed}/64", strict=False)) if parsed.version == 6 else str(parsed)
