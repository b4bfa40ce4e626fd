"""`sites`: the sites that send comments, their webhook secrets and callbacks."""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime

import click
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from models.entities import Site
from moderation import callbacks
from moderation.sites import SiteError, create_site, require_site, rotate_secret, shown_callback_url
from server.cli import common


@click.group()
def sites() -> None:
    """Sites that send comments, and their webhook secrets."""


@sites.command("add")
@click.argument("name")
@click.option("--callback-url", default=None, help="Where decisions are POSTed (signed).")
@click.pass_context
def sites_add(ctx: click.Context, name: str, callback_url: str | None) -> None:
    """Register a site; its new whsec_ secret is the last line printed."""
    with common.transaction(ctx, create=True) as session:
        try:
            site, secret = create_site(session, name, callback_url)
        except SiteError as error:
            raise click.ClickException(str(error)) from None
        shown = shown_callback_url(site.callback_url) if site.callback_url else "(none)"
        click.echo(f"site {site.name} created; callback URL: {shown}")
        click.echo("its webhook secret (shown once; store it in the site's configuration):")
    click.echo(secret)


@sites.command("rotate-secret")
@click.argument("name")
@click.pass_context
def sites_rotate_secret(ctx: click.Context, name: str) -> None:
    """Issue a new secret; the old one keeps verifying for SECRET_ROTATION_OVERLAP_HOURS."""
    settings = common.settings(ctx)
    with common.transaction(ctx, create=False) as session:
        try:
            site = require_site(session, name)
        except SiteError as error:
            raise click.ClickException(str(error)) from None
        secret = rotate_secret(session, site, settings.secret_overlap)
        hours = settings.secret_rotation_overlap_hours
        old = (
            f"the old one keeps working for {hours:g} h"
            if hours > 0
            else "the old one stops verifying (within SITE_CACHE_SECONDS on running web processes)"
        )
        click.echo(f"new secret for {name}; {old}:")
    click.echo(secret)


@sites.command("list")
@click.pass_context
def sites_list(ctx: click.Context) -> None:
    """Sites with their callback URL and state."""
    settings = common.settings(ctx)
    with common.transaction(ctx, create=False) as session:
        failing = callbacks.failing_callback_counts(session)
        sites = session.scalars(select(Site).order_by(Site.name)).all()
        for site in sites:
            url = shown_callback_url(site.callback_url) if site.callback_url else "-"
            click.echo(f"{site.name}\t{url}\t{_callback_state(site, failing.get(site.id, 0))}")
    if not sites:  # on stderr, as for `models list`: a script gets no lines, a person learns where it looked
        where = make_url(settings.effective_database_url).render_as_string(hide_password=True)
        click.echo(f"no sites in {where}: `moderation sites add NAME` registers one", err=True)


def _callback_state(site: Site, failing: int = 0) -> str:
    if site.callback_disabled_at is None:
        return f"ok, {failing} failing and being retried" if failing else "ok"
    since = site.callback_disabled_at.strftime("%Y-%m-%d %H:%M UTC")
    if site.callbacks_paused_by:
        return f"callbacks paused by {site.callbacks_paused_by} since {since}"
    return f"callbacks disabled (410) since {since}"


@sites.command("set-callback")
@click.argument("name")
@click.argument("url")
@click.pass_context
def sites_set_callback(ctx: click.Context, name: str, url: str) -> None:
    """Save where the site's decisions are POSTed; '' clears it. Held-back callbacks go to the new URL."""
    with common.transaction(ctx, create=False) as session:
        site = _locked_site(session, name)
        try:
            saved = callbacks.save_callback_url(session, site, url, datetime.now(UTC))
        except SiteError as error:
            raise click.ClickException(str(error)) from None
    if saved.url is None:
        held = f"; {saved.held_back} waiting callback(s) held back until a URL is saved" if saved.held_back else ""
        click.echo(f"callback URL of {name} cleared: its decisions are not sent anywhere{held}")
    elif saved.stays_paused:
        click.echo(f"callback URL of {name} saved; its callbacks stay paused until `sites resume {name}`")
    else:
        # Committed as pending: beat's retry loop sends what was held back to the URL just saved.
        held_back = f"; {saved.released} held-back callback(s) will be sent to it" if saved.released else ""
        click.echo(f"callback URL of {name} saved{held_back}")


@sites.command("pause")
@click.argument("name")
@click.pass_context
def sites_pause(ctx: click.Context, name: str) -> None:
    """Hold back the site's callbacks (decisions go on) until `sites resume`."""
    with common.transaction(ctx, create=False) as session:
        site = _locked_site(session, name)
        earlier_pause = _callback_state(site) if site.callbacks_paused_by else None
        held = callbacks.pause_callbacks(session, site, datetime.now(UTC), by=f"{_os_user()} (command line)")
        has_url = bool(site.callback_url)
    if earlier_pause:
        click.echo(f"{name} was already paused ({earlier_pause}); {held} more waiting callback(s) held back")
    else:
        click.echo(f"callbacks of {name} paused; {held} waiting callback(s) held back until `sites resume {name}`")
    if not has_url:
        click.echo(f"{name} has no callback URL yet: save one with `sites set-callback {name} URL` before resuming")


@sites.command("resume")
@click.argument("name")
@click.pass_context
def sites_resume(ctx: click.Context, name: str) -> None:
    """Turn the site's callbacks back on (after a pause or a 410) and send what was held back."""
    with common.transaction(ctx, create=False) as session:
        site = _locked_site(session, name)
        if site.callback_disabled_at is None:  # neither paused nor a 410: there is nothing to turn back on
            click.echo(f"callbacks of {name} are not paused (nor disabled by a 410); nothing changed")
            return
        if not site.callback_url:  # released, they would all be dead letters at once
            raise click.ClickException(
                f"{name} has no callback URL to send to: save one first with `sites set-callback {name} URL`"
            )
        released = callbacks.enable_callbacks(session, site, datetime.now(UTC))
    # Committed as pending: beat's retry loop sends them within a minute.
    click.echo(f"callbacks of {name} resumed; {released} held-back callback(s) will be sent")


def _locked_site(session: Session, name: str) -> Site:
    try:
        site = require_site(session, name)
    except SiteError as error:
        raise click.ClickException(str(error)) from None
    # A plain SELECT ... FOR UPDATE of the row: refreshing the site would repeat the join that loaded its
    # secrets, and PostgreSQL refuses to lock the nullable side of an outer join.
    return session.execute(
        select(Site).where(Site.id == site.id).with_for_update().execution_options(populate_existing=True)
    ).scalar_one()


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return f"uid {os.getuid()}"
