"""`authors`: commenters' personal data (erasure)."""

from __future__ import annotations

import click

from moderation.intake import MAX_EMAIL_CHARS, storable, within_limit
from moderation.sites import SiteError, require_site
from server.cli import common


@click.group()
def authors() -> None:
    """Commenters' personal data."""


ERASE_FORMS = "give exactly one of --email ADDRESS or --comment ID (repeat --comment for more comments)"


def _comment_ids(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """Ids as intake takes them: no other can name a stored comment, and NUL or a lone surrogate (from
    undecodable argv bytes) would fail in the database driver instead of here."""
    if not values:
        return values
    from webhooks.schemas import MAX_ID_CHARS

    for value in values:
        try:
            within_limit(storable(value), MAX_ID_CHARS)
        except ValueError as error:
            raise click.BadParameter(str(error), ctx, param) from None
        if not value.strip():
            raise click.BadParameter("must not be blank", ctx, param)
    return values


def _erasure_email(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The e-mail as the erasure API takes it: a blank one would match nobody and read as done."""
    if value is None:
        return value
    if not value.strip():
        raise click.BadParameter("must not be blank", ctx, param)
    try:
        within_limit(storable(value), MAX_EMAIL_CHARS)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx, param) from None
    return value


@authors.command("erase")
@click.option("--site", "site_name", required=True, help="The site the author commented on.")
@click.option(
    "--email", default=None, callback=_erasure_email, help="The author's e-mail address (case does not matter)."
)
@click.option(
    "--comment",
    "comment_ids",
    multiple=True,
    callback=_comment_ids,
    help="The site's own id of a comment to erase (as sent at intake); repeat for more. Instead of --email.",
)
@click.pass_context
def authors_erase(ctx: click.Context, site_name: str, email: str | None, comment_ids: tuple[str, ...]) -> None:
    """Remove the author's name, e-mail, URL, IP and user agent everywhere; statistics stay.

    By e-mail: all the author's comments on the site. By comment id: those comments only, the way to reach
    comments sent without an e-mail.
    """
    from datetime import UTC, datetime

    from moderation.privacy import erase_author, erase_comments_of_site

    if (email is not None) == bool(comment_ids):  # both forms, or neither
        raise click.UsageError(ERASE_FORMS, ctx)
    with common.transaction(ctx, create=False) as session:
        try:
            site = require_site(session, site_name)
        except SiteError as error:
            raise click.ClickException(str(error)) from None
        now = datetime.now(UTC)
        if email is not None:
            erased = erase_author(session, site, email, now)
        else:
            erased = erase_comments_of_site(session, site, comment_ids, now)
    click.echo(f"erased the author of {erased.comments} comment(s) on {site_name}")
    if not erased.comments:
        looked_for = f"e-mail {email!r} (case ignored)" if email is not None else "these comment ids"
        click.echo(f"no comment on {site_name} left to erase with {looked_for}: check it if that surprises", err=True)
    if erased.list_entries:
        click.echo(f"removed {erased.list_entries} block/allow-list entr{'y' if erased.list_entries == 1 else 'ies'}")
    if erased.kept_entry_ids:  # said here only: the API logs them, where its admin looks
        one = len(erased.kept_entry_ids) == 1
        click.echo(
            f"kept {len(erased.kept_entry_ids)} all-sites list entr{'y' if one else 'ies'} naming this address "
            "(they apply to every site): remove them on the dashboard's lists page if the erasure covers them "
            f"(id{'' if one else 's'} {', '.join(map(str, erased.kept_entry_ids))})"
        )
