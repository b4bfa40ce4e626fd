"""`reclassify`: send comments the classifiers could not decide back to them."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from moderation.lifecycle import send_back_unclassified
from server.cli import common


@click.command()
@click.option("--site", "site_name", default=None, help="Only this site's comments (default: every site's).")
@click.pass_context
def reclassify(ctx: click.Context, site_name: str | None) -> None:
    """Send comments held as not_classified, and still held (no verdict stands on them), back to the classifiers.

    For after the cause is fixed (a site's thresholds, a model): the outbox relay hands them to the workers
    once they have waited OUTBOX_QUIET_SECONDS (and up to OUTBOX_RELAY_INTERVAL_SECONDS more), and each gets
    a new decision, told to its site.
    """
    with common.transaction(ctx, create=False) as session:
        sent = send_back_unclassified(session, datetime.now(UTC), common.site_id_or_all(session, site_name))
    if not sent:
        click.echo("no comments are held as not_classified", err=True)
        return
    click.echo(f"sent {len(sent)} comment{'' if len(sent) == 1 else 's'} back to the classifiers")
