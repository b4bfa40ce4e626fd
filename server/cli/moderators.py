"""`moderators`: the dashboard's accounts."""

from __future__ import annotations

import sys
from typing import NamedTuple

import click

from server.cli import common
from server.settings import Settings


@click.group()
def moderators() -> None:
    """Dashboard accounts: moderators act on comments; admins also manage sites, lists and people."""


@moderators.command("add")
@click.argument("email")
@click.option("--role", type=click.Choice(["moderator", "admin"]), default="moderator", show_default=True)
@click.pass_context
def moderators_add(ctx: click.Context, email: str, role: str) -> None:
    """Create a dashboard account; the password is read from a prompt, or from stdin's first line when piped."""
    from datetime import UTC, datetime

    from moderation.accounts import AccountError, account_email, create_moderator

    try:
        account_email(email)  # before the password is asked for, or said to be missing
    except AccountError as error:
        raise click.ClickException(str(error)) from None
    password = _new_password()
    with common.transaction(ctx, create=True) as session:
        try:
            moderator = create_moderator(session, email, password, role, datetime.now(UTC))
        except AccountError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"{moderator.role} {moderator.email} added")


@moderators.command("list")
@click.pass_context
def moderators_list(ctx: click.Context) -> None:
    """Accounts with their role, state and last sign-in."""
    from sqlalchemy import select

    from models.entities import Moderator

    with common.transaction(ctx, create=False) as session:
        for row in session.scalars(select(Moderator).order_by(Moderator.email)):
            last = row.last_login_at.isoformat(timespec="seconds") if row.last_login_at else "never"
            click.echo(f"{row.email}\t{row.role}\t{'active' if row.is_active else 'deactivated'}\t{last}")


@moderators.command("deactivate")
@click.argument("email")
@click.pass_context
def moderators_deactivate(ctx: click.Context, email: str) -> None:
    """Sign-in refused from now on and open sessions ended; past actions stay in the audit trail."""
    outcome = _set_active(ctx, email, False)
    if not outcome.changed:
        click.echo(f"{email} is already deactivated; nothing changed")
        return
    click.echo(f"{email} deactivated")
    if outcome.active_admins == 0:
        click.echo(
            "warning: no active admin is left: nobody can open the admin pages until `moderators activate EMAIL` "
            "or `moderators add EMAIL --role admin`",
            err=True,
        )


@moderators.command("activate")
@click.argument("email")
@click.pass_context
def moderators_activate(ctx: click.Context, email: str) -> None:
    """Sign-in allowed again, with the account's password; sessions from before stay ended."""
    if _set_active(ctx, email, True).changed:
        click.echo(f"{email} activated")
    else:
        click.echo(f"{email} is already active; nothing changed")


class _ActiveFlagSet(NamedTuple):
    changed: bool  # False: the account was in that state already
    active_admins: int  # how many active admins there are now


def _set_active(ctx: click.Context, email: str, active: bool) -> _ActiveFlagSet:
    """Set the account's active flag."""
    from moderation.accounts import active_admin_count, find_moderator

    with common.transaction(ctx, create=False) as session:
        moderator = find_moderator(session, email)
        if moderator is None:
            raise click.ClickException(f"no moderator {email}")
        changed = moderator.is_active != active
        moderator.is_active = active
        session.flush()
        return _ActiveFlagSet(changed, active_admin_count(session))


@moderators.command("set-password")
@click.argument("email")
@click.pass_context
def moderators_set_password(ctx: click.Context, email: str) -> None:
    """A new password (prompted, or stdin's first line when piped); the account's open sessions end."""
    from moderation.accounts import AccountError, find_moderator, set_password

    with common.transaction(ctx, create=False) as session:  # before the password is asked for, or said missing
        if find_moderator(session, email) is None:
            raise click.ClickException(f"no moderator {email}")
    password = _new_password()
    with common.transaction(ctx, create=False) as session:
        moderator = find_moderator(session, email)
        if moderator is None:
            raise click.ClickException(f"no moderator {email}")
        try:
            set_password(moderator, password)
        except AccountError as error:
            raise click.ClickException(str(error)) from None
        account = moderator.email
    click.echo(f"password of {email} changed; its open sessions have ended")
    _forget_demo_password(common.settings(ctx), account)


def _forget_demo_password(settings: Settings, account: str) -> None:
    """Run after the commit: a password change that failed leaves the demo's file as true as it was."""
    from server.demo import DEMO_ADMIN_FILE, forget_demo_password

    try:
        rewritten = forget_demo_password(settings.var_dir, account)
    except OSError as error:  # the password is changed all the same: say what is now stale
        where = settings.var_dir / DEMO_ADMIN_FILE
        click.echo(f"warning: {where} still shows the old password: {error.strerror or error}", err=True)
        return
    if rewritten is not None:
        click.echo(f"{rewritten} no longer holds a password: `make run` stops printing one")


def _new_password() -> str:
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    line = sys.stdin.readline()
    if not line:  # stdin closed or /dev/null (cron, a script's missing pipe): not a short password
        raise click.ClickException("no password on stdin: pipe it as the first line, or run this in a terminal")
    return line.rstrip("\r\n")
