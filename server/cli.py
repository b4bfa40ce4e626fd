"""The `moderation` command: operators' interface to the service (names are a stable interface)."""

from __future__ import annotations

import contextlib
import errno
import getpass
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from select import select as fds_ready
from typing import Any, TextIO

import click
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from models.db import SQLITE_BEGIN, create_db_engine, make_session_factory
from models.entities import ModelVersion, Site
from models.migrate import (
    head_revision,
    is_ahead,
    missing_from_schema,
    schema_mismatch,
    schema_revision,
    upgrade_database,
)
from moderation import callbacks, registry
from moderation.classifier import ModerationModel
from moderation.data import DataError, Example, public_sets, with_own_corpus
from moderation.features import CommentText
from moderation.intake import (
    MAX_AUTHOR_NAME_CHARS,
    MAX_BODY_CHARS,
    MAX_EMAIL_CHARS,
    MAX_URL_CHARS,
    storable,
    within_limit,
)
from moderation.policy import Signals, Thresholds, decide
from moderation.sites import SiteError, create_site, require_site, rotate_secret, shown_callback_url
from moderation.training import DEFAULT_FOLDS
from moderation.training import train as train_model
from server.logs import configure_logging
from server.settings import Settings, describe_invalid_settings, redacted_url
from workers.queues import WORKER_QUEUES


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def _sessions(settings: Settings) -> sessionmaker[Session]:
    """Sessions on an up-to-date schema.

    A new database gets the schema, so every command works on a fresh VAR_DIR without a separate migrate.
    One at an older migration is refused, not upgraded: that is `moderation migrate`'s job, once a backup is
    taken, and never the side effect of a `sites list` run to look around before an upgrade.
    """
    _create_or_check_schema(settings)
    return make_session_factory(create_db_engine(settings.effective_database_url))


def _create_or_check_schema(settings: Settings) -> None:
    url = settings.effective_database_url
    path = _sqlite_file(url)
    if path is None or path.exists():
        try:
            current = schema_revision(url)
        except OperationalError as error:
            raise click.ClickException(_cannot_connect(settings, error)) from None
        problem = schema_mismatch(current)
        if problem is not None:
            raise click.ClickException(problem)
        if current is not None:
            return
    _upgrade(settings)


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (any driver, any query string); None for another database or memory."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _upgrade(settings: Settings) -> None:
    url = settings.effective_database_url
    path = _sqlite_file(url)
    _make_var_dir(settings)
    created = path if path is not None and not path.exists() else None
    try:
        upgrade_database(url)
    except OperationalError as error:  # refused, unknown host or database, bad password, unwritable file
        raise click.ClickException(_cannot_connect(settings, error)) from None
    if created is not None:
        # Run from another folder, the default VAR_DIR (./var) is a new, empty one: say so rather than
        # let `sites list` answer nothing as if the real database were empty.
        click.echo(f"created a new database {created} (VAR_DIR or DATABASE_URL chooses another)", err=True)


class _Commands(click.Group):
    """The `moderation` group: a database error ends any command with one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OperationalError as error:
            # Connecting is checked where every command starts (`_upgrade`, `moderation run`); this is a
            # failure after that (a lock, a timeout, a dropped connection): the URL is not the suspect.
            raise click.ClickException(f"database error: {_driver_message(_settings(ctx), error)}") from None


def _cannot_connect(settings: Settings, error: OperationalError) -> str:
    shown = redacted_url(settings.effective_database_url)
    return f"cannot use the database {shown}: {_driver_message(settings, error)} (check DATABASE_URL)"


def _driver_message(settings: Settings, error: OperationalError) -> str:
    """The driver's message on one line, with any part of the URL's user name and password hidden."""
    reason = " ".join(str(error.orig or error).split())
    url = settings.effective_database_url
    userinfo = url.partition("://")[2].rpartition("@")[0]
    for secret in {userinfo, *userinfo.split(":", 1)[1:], *userinfo.split("@")}:
        if len(secret) >= 3:  # a fragment shorter than that is no secret, and would blot out the message
            reason = reason.replace(secret, "***")
    return reason


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Comment moderation service: intake, workers, models and sites."""
    try:
        settings = Settings()
    except ValidationError as error:
        raise click.ClickException(describe_invalid_settings(error)) from None
    configure_logging(settings.log_level, "text" if sys.stderr.isatty() else settings.log_format)
    ctx.obj = settings
    if ctx.invoked_subcommand == "web":
        from server.factory import warn_if_session_key_is_per_host

        # Here, in the process that starts gunicorn: once per start, not once per web worker process.
        warn_if_session_key_is_per_host(settings)


@main.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create or upgrade the database schema to the latest migration."""
    settings = _settings(ctx)
    path = _sqlite_file(settings.effective_database_url)
    new_file = path is not None and not path.exists()
    before = None if new_file else _schema_revision(settings)  # reading a missing file would make one
    if is_ahead(before):
        missing = missing_from_schema(settings.effective_database_url)
        if missing:
            raise click.ClickException(
                f"the database schema is at {before}, a migration this code does not know, and lacks "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}: it is not this service's schema "
                "(check DATABASE_URL)"
            )
        # Exit 0: compose starts web, worker and beat only after `migrate` succeeds, and they work with it.
        click.echo(
            f"database schema is at {before}, newer than this code's {head_revision()}: left as it is "
            "(this version works with it; its migrations only add)"
        )
        return
    _upgrade(settings)
    after = _schema_revision(settings)
    if before is None:
        click.echo(f"database is up to date: schema created at {after}")
    elif before != after:
        click.echo(f"database is up to date: schema upgraded from {before} to {after}")
    else:
        click.echo(f"database is up to date: schema at {after}, nothing to do")


def _make_var_dir(settings: Settings) -> None:
    """The default SQLite database's folder; a DATABASE_URL naming a folder that is not there is a mistake."""
    if settings.database_url is None:
        make_folder(settings.var_dir, "VAR_DIR")


def make_folder(path: Path, what: str) -> None:
    """Create ``path`` (and its parents) or stop with one line saying why not: not writable, a file in the way."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise click.ClickException(f"cannot create {what} {path}: {error.strerror or error}") from None
    check_writable_folder(path, what)


def check_writable_folder(path: Path, what: str) -> None:
    """Stop with one line unless files can be written in ``path``, or in the folder it would be made in;
    creates nothing that stays. For a check before long work whose result is written at its end."""
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise click.ClickException(f"cannot create {what} {path}: {os.strerror(errno.ENOTDIR)}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        verb = "write into" if existing == path else "create"
        raise click.ClickException(f"cannot {verb} {what} {path}: {error.strerror or error}") from None


def _can_connect(settings: Settings) -> None:
    _make_var_dir(settings)
    engine = create_db_engine(settings.effective_database_url)
    try:
        with engine.connect():
            pass
    except OperationalError as error:
        raise click.ClickException(_cannot_connect(settings, error)) from None
    finally:
        engine.dispose()


def _schema_revision(settings: Settings) -> str | None:
    try:
        return schema_revision(settings.effective_database_url)
    except OperationalError as error:
        raise click.ClickException(_cannot_connect(settings, error)) from None


def _named_host(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """gunicorn reads an empty host as every interface: `--host "$HOST"` with HOST unset must not mean that."""
    if value is not None and not value.strip():
        raise click.BadParameter("must name an interface: 127.0.0.1, or 0.0.0.0 for all", ctx, param)
    return value


@main.command()
@click.option("--host", default=None, callback=_named_host, help="Interface to bind (default: HOST or 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default: PORT or 8000).")
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Gunicorn worker processes (default: WEB_WORKERS)."
)
@click.pass_context
def web(ctx: click.Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the webhook, the API and the dashboard under gunicorn."""
    from server.gunicorn_app import serve
    from server.runner import port_in_use

    settings = _settings(ctx)
    host = settings.host if host is None else host
    port = settings.port if port is None else port
    if port_in_use(host, port):  # else gunicorn retries for five seconds, logging each try, then gives up
        raise click.ClickException(f"port {port} on {host} is taken: choose a free one with --port or PORT")
    serve(host, port, settings.web_workers if workers is None else workers)


@main.command()
@click.option(
    "--concurrency", type=click.IntRange(min=1), default=None, help="Worker processes (default: WORKER_CONCURRENCY)."
)
@click.option("--hostname", default=None, help="Celery node name, e.g. worker1@%h.")
@click.option(
    "--queues",
    default=",".join(WORKER_QUEUES),
    show_default=True,
    help="Queues to take tasks from: moderation (classify, housekeeping), callbacks (notify the sites), "
    "training (scheduled retraining).",
)
@click.option(
    "--metrics-host", default=None, help="Interface of this worker's Prometheus metrics (default: WORKER_METRICS_HOST)."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of this worker's Prometheus metrics; 0: none (default: WORKER_METRICS_PORT).",
)
@click.pass_context
def worker(
    ctx: click.Context,
    concurrency: int | None,
    hostname: str | None,
    queues: str,
    metrics_host: str | None,
    metrics_port: int | None,
) -> None:
    """Run a Celery worker: classify comments and notify sites."""
    from server.factory import build_celery
    from server.health import database_problem
    from server.metrics import serve_worker_metrics

    chosen = [name.strip() for name in queues.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(WORKER_QUEUES))
    if not chosen or unknown:
        raise click.BadParameter(f"choose from {', '.join(WORKER_QUEUES)} (got {queues!r})", param_hint="--queues")

    settings = _settings(ctx)
    # A worker on a database it cannot use would take tasks from the queue and retry each one for ever:
    # refuse to start instead. An outage after this keeps the tasks' own retries.
    try:
        problem = database_problem(settings.effective_database_url)
    except OperationalError as error:
        raise click.ClickException(_cannot_connect(settings, error)) from None
    if problem is not None:
        raise click.ClickException(problem)
    # From this (main) process, which forks the pool: one port per worker, not one per pool process.
    serve_worker_metrics(
        settings.worker_metrics_host if metrics_host is None else metrics_host,
        settings.worker_metrics_port if metrics_port is None else metrics_port,
    )
    argv = [
        "worker",
        f"--loglevel={settings.log_level}",
        f"--concurrency={settings.worker_concurrency if concurrency is None else concurrency}",
        f"--queues={','.join(chosen)}",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    build_celery(settings).worker_main(argv)


@main.command()
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Run Celery beat: outbox relay, callback retries, housekeeping."""
    from server.factory import build_celery

    settings = _settings(ctx)
    make_folder(settings.var_dir, "VAR_DIR")
    schedule = settings.var_dir / "celerybeat-schedule"
    build_celery(settings).start(["beat", f"--loglevel={settings.log_level}", f"--schedule={schedule}"])


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Everything on one machine: migrate, train if needed, then web, worker, beat (and Redis if unset)."""
    from server.runner import run_all

    settings = _settings(ctx)
    _can_connect(settings)  # before anything starts: a database that cannot be used is one line
    raise SystemExit(run_all(settings))


# --- sites ---------------------------------------------------------------------------------------


@main.group()
def sites() -> None:
    """Sites that send comments, and their webhook secrets."""


@sites.command("add")
@click.argument("name")
@click.option("--callback-url", default=None, help="Where decisions are POSTed (signed).")
@click.pass_context
def sites_add(ctx: click.Context, name: str, callback_url: str | None) -> None:
    """Register a site; its new whsec_ secret is the last line printed."""
    with _sessions(_settings(ctx)).begin() as session:
        try:
            site, secret = create_site(session, name, callback_url)
        except SiteError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"site {site.name} created; callback URL: {site.callback_url or '(none)'}")
        click.echo("its webhook secret (shown once; store it in the site's configuration):")
    click.echo(secret)


@sites.command("rotate-secret")
@click.argument("name")
@click.pass_context
def sites_rotate_secret(ctx: click.Context, name: str) -> None:
    """Issue a new secret; the old one keeps verifying for SECRET_ROTATION_OVERLAP_HOURS."""
    settings = _settings(ctx)
    with _sessions(settings).begin() as session:
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
    from sqlalchemy import select

    settings = _settings(ctx)
    with _sessions(settings)() as session:
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
    with _sessions(_settings(ctx)).begin() as session:
        site = _locked_site(session, name)
        try:
            saved = callbacks.save_callback_url(session, site, url, datetime.now(UTC))
        except SiteError as error:
            raise click.ClickException(str(error)) from None
    if saved.url is None:
        click.echo(f"callback URL of {name} cleared: its decisions are not sent anywhere")
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
    with _sessions(_settings(ctx)).begin() as session:
        site = _locked_site(session, name)
        held = callbacks.pause_callbacks(session, site, datetime.now(UTC), by=f"{_os_user()} (command line)")
        has_url = bool(site.callback_url)
    click.echo(f"callbacks of {name} paused; {held} waiting callback(s) held back until `sites resume {name}`")
    if not has_url:
        click.echo(f"{name} has no callback URL yet: save one with `sites set-callback {name} URL` before resuming")


@sites.command("resume")
@click.argument("name")
@click.pass_context
def sites_resume(ctx: click.Context, name: str) -> None:
    """Turn the site's callbacks back on (after a pause or a 410) and send what was held back."""
    with _sessions(_settings(ctx)).begin() as session:
        site = _locked_site(session, name)
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
    session.refresh(site, with_for_update=True)
    return site


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return f"uid {os.getuid()}"


# --- models ----------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder with the public data sets (see README); the own corpus is always used.",
)
@click.option("--activate/--no-activate", default=True, show_default=True, help="Make the new version active.")
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=DEFAULT_FOLDS,
    show_default=True,
    help="Fold models whose scores choose the thresholds; fewer train faster and choose less steadily.",
)
@click.pass_context
def train(ctx: click.Context, data_dir: Path | None, activate: bool, folds: int) -> None:
    """Train both classifiers and register a new model version."""
    settings = _settings(ctx)
    version = train_and_register(settings, data_dir, activate=activate, folds=folds)
    click.echo(f"registered model {version}" + (" (active)" if activate else ""))


def train_and_register(
    settings: Settings, data_dir: Path | None, activate: bool = True, folds: int = DEFAULT_FOLDS
) -> str:
    """Train on the corpus, DATA_DIR's public sets and the moderators' labels; register the version."""
    from moderation.learning import moderator_examples

    sessions = _sessions(settings)
    check_writable_folder(settings.effective_model_dir, "MODEL_DIR")  # now, not after minutes of training
    try:
        public = public_sets(data_dir)
        examples = with_own_corpus(public)
    except (DataError, OSError) as error:
        raise click.ClickException(str(error)) from None
    if data_dir is not None:
        _say_what_was_found({name: len(found) for name, found in public.items()}, data_dir)
    with sessions() as session:
        examples += moderator_examples(session)
    model = train_model(examples, folds=folds)  # no session is open during the long CPU work
    version = registry.new_version_name()
    model.card["version"] = version
    model.card["data"]["data_dir"] = str(data_dir.resolve()) if data_dir else None
    try:
        artifact = registry.save_artifact(model, settings.effective_model_dir, version)
    except OSError as error:  # checked before training, but a disk can fill up or a mount go read-only
        raise click.ClickException(f"cannot save model {version} in MODEL_DIR: {error}") from None
    with sessions.begin() as session:
        registry.register(session, version, artifact, model.card)
        if activate:
            registry.activate(session, version)
    return version


def _say_what_was_found(sizes: dict[str, int], data_dir: Path) -> None:
    """A --data-dir without any set in it is most likely a wrong path: say so before the long training."""
    found = {name: size for name, size in sizes.items() if size}
    if found:
        click.echo(f"public examples from {data_dir}: " + ", ".join(f"{k} {n:,}" for k, n in sorted(found.items())))
    empty = sorted(name for name, size in sizes.items() if not size)
    if empty:
        click.echo(f"warning: {', '.join(f'{name}/' for name in empty)} in {data_dir} held no examples", err=True)
    if not found:
        _warn_no_public_sets(data_dir, "training on the shipped corpus and the moderators' labels only")


def _warn_no_public_sets(data_dir: Path, instead: str) -> None:
    """A --data-dir without any set in it is most likely a wrong path."""
    from moderation.data import PUBLIC_LOADERS

    folders = ", ".join(f"{name}/" for name in PUBLIC_LOADERS)
    click.echo(f"warning: no public data set in {data_dir} (looked for {folders}); {instead}", err=True)


@main.group()
def data() -> None:
    """The public data sets."""


@data.command("fetch")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="Folder to download into (one sub-folder per data set, as the loaders expect).",
)
def data_fetch(dest: Path) -> None:
    """Download the public data sets from their public homes (needs internet access)."""
    from moderation.fetch import FetchError, fetch_all

    try:
        names = fetch_all(dest)
    except (FetchError, OSError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"fetched {', '.join(names)} into {dest}; train with: moderation train --data-dir {dest}")


@main.group()
def models() -> None:
    """The model registry: list, import, activate, roll back."""


@models.command("list")
@click.pass_context
def models_list(ctx: click.Context) -> None:
    """Versions, newest first (* active), with their held-out metrics, creation and activation dates."""
    settings = _settings(ctx)
    with _sessions(settings)() as session:
        versions = registry.list_versions(session)
        if not versions:
            # On stderr: a script reading the list by lines gets none. A person may be in the wrong folder.
            where = make_url(settings.effective_database_url).render_as_string(hide_password=True)
            click.echo(
                f"no model versions in {where}: `moderation train` makes one, `moderation models import` brings one",
                err=True,
            )
        for row in versions:
            policy = row.card.get("metrics", {}).get("policy_own_held_out", {})
            marker = "*" if row.is_active else " "
            features = row.card.get("features_version", "unrecorded")
            stale = "" if registry.made_for_these_features(row.card) else " (older features: train again)"
            # New columns go at the end: scripts read the first ones by position.
            click.echo(
                f"{marker} {row.version}  leak={policy.get('leak_rate')}  "
                f"ordinary_held={policy.get('ordinary_held')}  thresholds={row.card.get('thresholds')}  "
                f"features={features}{stale}  created={_utc_minute(row.created_at)}  "
                f"own_spam_f1={_own_held_out_f1(row.card, 'spam')}  "
                f"own_advice_f1={_own_held_out_f1(row.card, 'medical_advice')}  activated={_activation(row)}"
            )


def _utc_minute(moment: datetime) -> str:
    if moment.tzinfo is None:  # SQLite hands back the stored UTC time without its zone
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _own_held_out_f1(card: dict[str, Any], label: str) -> str:
    """F1 on the shipped corpus's held-out quarter, as the card recorded it at training ("-" if it did not)."""
    own = card.get("metrics", {}).get("held_out_by_source", {}).get("own", {})
    f1 = own.get(label, {}).get("f1")
    return f"{f1:.3f}" if isinstance(f1, int | float) else "-"


def _activation(row: ModelVersion) -> str:
    if row.activated_at is not None:
        return _utc_minute(row.activated_at)
    if row.is_active:
        return "yes"  # made active outside `models activate`, which records when
    # Never, or rolled back from: the registry clears a version's activation on a rollback, so the two look
    # alike. One word, so that the column splits on spaces like the others.
    return "no"


@models.command("activate")
@click.argument("version")
@click.pass_context
def models_activate(ctx: click.Context, version: str) -> None:
    """Make VERSION (as `models list` names it) the one every worker scores with; its file is checked first."""
    settings = _settings(ctx)
    with _sessions(settings).begin() as session:
        try:
            registry.activate(session, version, model_dir=settings.effective_model_dir)
        except registry.RegistryError as error:
            raise click.ClickException(str(error)) from None
    click.echo(f"model {version} is active; workers switch within MODEL_CHECK_INTERVAL_SECONDS")


@models.command("rollback")
@click.pass_context
def models_rollback(ctx: click.Context) -> None:
    """Go back to the version that was active before the current one (again: one further back)."""
    settings = _settings(ctx)
    with _sessions(settings).begin() as session:
        try:
            # The same check as `models activate`: the file, in this command's MODEL_DIR first, is intact.
            row = registry.rollback(session, model_dir=settings.effective_model_dir)
        except registry.RegistryError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"rolled back: model {row.version} is active")


@models.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--activate", is_flag=True, help="Make the imported version active.")
@click.option(
    "--allow-other-features",
    is_flag=True,
    help="Import a model trained on another version's features (its scores drift: train again soon).",
)
@click.pass_context
def models_import(ctx: click.Context, path: Path, activate: bool, allow_other_features: bool) -> None:
    """Register a model-VERSION.skops saved by another install (its card beside it), copied into MODEL_DIR."""
    settings = _settings(ctx)
    model_dir = settings.effective_model_dir
    with _sessions(settings).begin() as session:
        try:
            # Checked as loading checks it, copied, registered; the copies are removed if this does not commit.
            imported = registry.import_artifact(session, path, model_dir, allow_other_features=allow_other_features)
            version, was_active = imported.row.version, imported.row.is_active
            if activate:
                registry.activate(session, version, model_dir=model_dir)
        except registry.RegistryError as error:
            raise click.ClickException(str(error)) from None
    if imported.registered_now:
        click.echo(f"imported model {version} into MODEL_DIR {model_dir}")
    elif model_dir / path.name in imported.copied:
        click.echo(
            f"model {version} is already registered with this very file; its missing file is back in {model_dir}"
        )
    else:
        click.echo(f"model {version} is already registered with this very file: nothing imported")
    if activate:
        click.echo(f"model {version} is active; workers switch within MODEL_CHECK_INTERVAL_SECONDS")
    elif not was_active:
        click.echo(f"activate it with: moderation models activate {version}")


@main.command()
@click.option(
    "--data",
    "data_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A labeled JSONL file (corpus/SCHEMA.md) to evaluate on instead of the held-out splits.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Public data sets whose held-out parts join the evaluation (default: those the model used).",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report folder (default: VAR_DIR/reports/<version>, or <version>-<file name> with --data).",
)
@click.pass_context
def evaluate(ctx: click.Context, data_file: Path | None, data_dir: Path | None, report_dir: Path | None) -> None:
    """Measure the active model on held-out data against the targets and the WordPress rule baseline.

    Comments the model was trained on are left out of every measure; a model saved before models kept a
    record of their training data cannot tell which those are, and the output says so.
    """
    from moderation.report import (
        LABEL_HEADERS,
        POLICY_HEADERS,
        EvaluationError,
        check_support,
        label_rows,
        mistakes_summary,
        policy_gaps,
        policy_rows,
        write_report,
    )
    from moderation.report import evaluate as run_evaluation

    settings = _settings(ctx)
    model = _active_model(settings)
    report_dir = report_dir or _default_report_dir(settings, model.version, data_file)
    check_writable_folder(report_dir, "the report folder")  # before the work, not after it
    examples = _evaluation_examples(model, data_file, data_dir)
    try:
        result = run_evaluation(model, examples)
    except EvaluationError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"model {model.version}: {result.coverage.summary()}")
    click.echo(_text_table(LABEL_HEADERS, label_rows(result)))
    click.echo(_text_table(POLICY_HEADERS, policy_rows(result)))
    gaps = policy_gaps(result)
    if gaps:
        click.echo(gaps)
    for check in result.checks:
        mark = "ok  " if check["met"] else "MISS"
        click.echo(
            f"{mark} {check['source']:<28} {check['measure']:<22} {check['value']:.4f} (target {check['target']})"
            f"  {check_support(check)}"
        )
    click.echo(mistakes_summary(result))
    try:
        page = write_report(result, report_dir)
    except OSError as error:
        raise click.ClickException(f"cannot write the report into {report_dir}: {error}") from None
    click.echo(f"report: {page}")


def _evaluation_examples(model: ModerationModel, data_file: Path | None, data_dir: Path | None) -> list[Example]:
    """The user's file (its comments are a site's, whatever the file is called), else the held-out splits."""
    from moderation.data import TEST
    from moderation.report import read_user_file

    try:
        if data_file is not None:
            examples = read_user_file(data_file)
        else:
            trained_dir = model.card.get("data", {}).get("data_dir")
            chosen = data_dir or (Path(trained_dir) if trained_dir and Path(trained_dir).is_dir() else None)
            public = public_sets(chosen)
            if data_dir is not None and not any(public.values()):
                _warn_no_public_sets(data_dir, "evaluating on the shipped corpus's held-out part only")
            examples = [e for e in with_own_corpus(public) if e.split == TEST]
    except (DataError, OSError) as error:
        raise click.ClickException(str(error)) from None
    if not examples:
        raise click.ClickException("nothing to evaluate on")
    if not any(e.spam is not None or e.medical_advice is not None for e in examples):
        raise click.ClickException(
            f"no labeled comments in {data_file or 'the held-out data'}: a line needs 'spam' or "
            "'medical_advice' (true or false)"
        )
    return examples


def _default_report_dir(settings: Settings, version: str, data_file: Path | None) -> Path:
    """The held-out data's report per version; another file's report beside it, never over it."""
    name = version if data_file is None else f"{version}-{data_file.stem}"
    return settings.var_dir / "reports" / name


def _text_table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[h for h in headers]] + [
        ["-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)) for row in cells)


def _active_model(settings: Settings) -> ModerationModel:
    store = registry.ModelStore(_sessions(settings), check_interval=0, model_dir=settings.effective_model_dir)
    try:
        return store.current()
    except registry.RegistryError as error:
        raise click.ClickException(str(error)) from None


@main.command()
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Most lines scored together; fewer whenever no more input is waiting.",
)
@click.option("--explain", is_flag=True, help="Add the words that pushed each score.")
@click.pass_context
def classify(ctx: click.Context, batch_size: int, explain: bool) -> None:
    """Read JSONL comments on stdin ({"body", "author"?, "email"?, "url"?, "article"?}); write one JSON line each.

    Every input line gets exactly one output line, in order, carrying its 1-based "line" number; a line
    that cannot be classified (blank, not JSON, text intake would refuse) gets {"line", "error"}.
    """
    model = _active_model(_settings(ctx))
    thresholds = Thresholds(**model.card["thresholds"]) if "thresholds" in model.card else Thresholds()
    for batch in _numbered(_line_batches(_StdinChunks(), batch_size)):
        sys.stdout.write("".join(_answers(model, thresholds, batch, explain)))
        sys.stdout.flush()  # a script that waits for its answers gets them now, not at the next batch


READ_CHUNK_BYTES = 1 << 16
# Longer than any line intake's limits allow (a 20,000-character body written as JSON escapes is under
# 250 KB): such a line is answered with an error and its bytes are dropped as they arrive, not kept.
MAX_LINE_BYTES = 1 << 20
# A batch stops growing past this many bytes of input, however many lines fit in --batch-size.
MAX_BATCH_BYTES = 8 << 20


class _StdinChunks:
    """Stdin's bytes as they arrive: each read returns what is there, waiting only when nothing is."""

    def __init__(self) -> None:
        self._stream = sys.stdin.buffer
        try:
            self._fd: int | None = self._stream.fileno()
        except (OSError, ValueError):  # io.UnsupportedOperation: an in-memory stream, all there already
            self._fd = None

    def read(self) -> bytes:
        """Up to READ_CHUNK_BYTES; empty at the end of the input."""
        if self._fd is None:
            return self._stream.read(READ_CHUNK_BYTES)
        # os.read, not the buffered stream: a buffered read would wait to fill its buffer.
        return os.read(self._fd, READ_CHUNK_BYTES)

    def more_ready(self) -> bool:
        """Whether a read would return at once (with data, or at the end) rather than wait for the writer."""
        if self._fd is None:
            return True
        readable, _, _ = fds_ready([self._fd], [], [], 0)
        return bool(readable)


def _line_batches(chunks: _StdinChunks, size: int) -> Iterator[list[bytes | None]]:
    """Input lines, without their newline, in batches of at most ``size``; None for a line over MAX_LINE_BYTES.

    Reading goes on while more input is ready (a fast pipe fills whole batches); when none is, the lines
    already read go out as they are: a writer waiting for an answer before it writes again is never kept
    waiting for input that only its answer would bring. Only a line's own missing end is waited for.
    """
    lines: list[bytes | None] = []
    batch_bytes = 0
    unfinished = bytearray()  # the start of a line whose newline has not arrived yet
    overlong = False  # that line is past MAX_LINE_BYTES: its bytes are dropped until its newline
    at_end = False
    while lines or not at_end:
        while not at_end and len(lines) < size and batch_bytes < MAX_BATCH_BYTES and (not lines or chunks.more_ready()):
            chunk = chunks.read()
            if not chunk:
                at_end = True
                if unfinished or overlong:
                    lines.append(None if overlong else bytes(unfinished))  # the last line, without a newline
                break
            last_newline = chunk.rfind(b"\n")
            if last_newline < 0:
                if not overlong:
                    unfinished += chunk  # only the new chunk is searched: a long line stays linear to read
                    if len(unfinished) > MAX_LINE_BYTES:
                        overlong, unfinished = True, bytearray()
                continue
            # A chunk is smaller than MAX_LINE_BYTES: only the line it finishes can be over it.
            first, *whole = chunk[:last_newline].split(b"\n")
            overlong = overlong or len(unfinished) + len(first) > MAX_LINE_BYTES
            lines.append(None if overlong else bytes(unfinished + first))
            lines += whole
            batch_bytes += last_newline + 1 + (0 if overlong else len(unfinished))
            overlong, unfinished = False, bytearray(chunk[last_newline + 1 :])
        if lines:
            yield lines[:size]
            del lines[:size]
            batch_bytes = sum(len(line) for line in lines if line is not None)


UTF8_BOM = "\ufeff".encode()


def _numbered(batches: Iterable[list[bytes | None]]) -> Iterator[list[tuple[int, CommentText | str]]]:
    """Each line parsed, with its 1-based number; a line that cannot be read is an error on that line."""
    number = 0
    for raw_lines in batches:
        batch: list[tuple[int, CommentText | str]] = []
        for raw in raw_lines:
            number += 1
            if number == 1 and raw is not None:
                raw = raw.removeprefix(UTF8_BOM)  # a file saved by Windows tools begins with one
            batch.append((number, _read_line(raw)))
        yield batch


def _read_line(raw: bytes | None) -> CommentText | str:
    if raw is None:
        return f"line longer than {MAX_LINE_BYTES} bytes, more than any comment intake takes"
    if not raw.strip():
        # Reported, not skipped: the answers must stay one per input line for scripts to match them up.
        return "blank line: each line must be a JSON object with a string 'body'"
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not UTF-8: {error}"
    return _parse_comment(line)


def _answers(
    model: ModerationModel, thresholds: Thresholds, batch: list[tuple[int, CommentText | str]], explain: bool
) -> list[str]:
    """One JSON line per input line of the batch, in order: the decision, or what was wrong with the line."""
    good = [(n, c) for n, c in batch if isinstance(c, CommentText)]
    scores = dict(zip([n for n, _ in good], model.score_many([c for _, c in good]), strict=True))
    answers = []
    for number, item in batch:
        if not isinstance(item, CommentText):
            answers.append(json.dumps({"line": number, "error": item}) + "\n")
            continue
        score = scores[number]
        verdict = decide(score, thresholds, Signals.of_text(item.body))
        out: dict[str, Any] = {
            "line": number,
            **score.as_dict(),
            "decision": verdict.outcome.value,
            "reasons": verdict.reasons,
            "model_version": model.version,
        }
        if explain:
            out["explanation"] = model.explain(item)
        answers.append(json.dumps(out, ensure_ascii=False) + "\n")
    return answers


# Intake's limits on the same fields (the webhook's body and author name, e-mail and URL). `article` has
# none: scripts name the article as they like (its id or its URL), and intake limits those differently.
CLASSIFY_FIELD_LIMITS = {
    "body": MAX_BODY_CHARS,
    "author": MAX_AUTHOR_NAME_CHARS,
    "email": MAX_EMAIL_CHARS,
    "url": MAX_URL_CHARS,
}


def _parse_comment(line: str) -> CommentText | str:
    try:
        row = json.loads(line)
    except ValueError as error:
        return f"not JSON: {error}"
    except RecursionError:
        return "not JSON this program reads: nested too deeply"
    if not isinstance(row, dict) or not isinstance(row.get("body"), str):
        return "each line must be a JSON object with a string 'body'"
    if not row["body"].strip():
        return "'body' must not be blank"  # as at intake: there is nothing to classify
    fields = {}
    for name in ("author", "email", "url", "article"):
        value = row.get(name)
        if value is not None and not isinstance(value, str):
            return f"'{name}' must be a string"
        fields[name] = value or ""
    for name, value in [("body", row["body"]), *fields.items()]:
        try:
            # The checks intake makes: JSON can spell a lone surrogate, which cannot be encoded, and a
            # text intake would refuse as too long must not get a score a script could act on.
            storable(value)
            if name in CLASSIFY_FIELD_LIMITS:
                within_limit(value, CLASSIFY_FIELD_LIMITS[name])
        except ValueError as error:
            return f"'{name}' {error}"
    return CommentText(body=row["body"], **fields)


# --- moderators ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _transaction(ctx: click.Context) -> Iterator[Session]:
    """One transaction on an engine that is disposed afterwards (no pooled connection outlives the command)."""
    sessions = _sessions(_settings(ctx))
    try:
        with sessions.begin() as session:
            yield session
    finally:
        sessions.kw["bind"].dispose()


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

    from moderation.accounts import AccountError, create_moderator

    password = _new_password()
    with _transaction(ctx) as session:
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

    with _transaction(ctx) as session:
        for row in session.scalars(select(Moderator).order_by(Moderator.email)):
            last = row.last_login_at.isoformat(timespec="seconds") if row.last_login_at else "never"
            click.echo(f"{row.email}\t{row.role}\t{'active' if row.is_active else 'deactivated'}\t{last}")


@moderators.command("deactivate")
@click.argument("email")
@click.pass_context
def moderators_deactivate(ctx: click.Context, email: str) -> None:
    """Sign-in refused from now on and open sessions ended; past actions stay in the audit trail."""
    admins_left = _set_active(ctx, email, False)
    click.echo(f"{email} deactivated")
    if admins_left == 0:
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
    _set_active(ctx, email, True)
    click.echo(f"{email} activated")


def _set_active(ctx: click.Context, email: str, active: bool) -> int:
    """Set the account's active flag; how many active admins there are then."""
    from moderation.accounts import active_admin_count, find_moderator

    with _transaction(ctx) as session:
        moderator = find_moderator(session, email)
        if moderator is None:
            raise click.ClickException(f"no moderator {email}")
        moderator.is_active = active
        session.flush()
        return active_admin_count(session)


@moderators.command("set-password")
@click.argument("email")
@click.pass_context
def moderators_set_password(ctx: click.Context, email: str) -> None:
    """A new password (prompted, or stdin's first line when piped); the account's open sessions end."""
    from moderation.accounts import AccountError, find_moderator, set_password

    password = _new_password()
    with _transaction(ctx) as session:
        moderator = find_moderator(session, email)
        if moderator is None:
            raise click.ClickException(f"no moderator {email}")
        try:
            set_password(moderator, password)
        except AccountError as error:
            raise click.ClickException(str(error)) from None
    click.echo(f"password of {email} changed; its open sessions have ended")


def _new_password() -> str:
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    line = sys.stdin.readline()
    if not line:  # stdin closed or /dev/null (cron, a script's missing pipe): not a short password
        raise click.ClickException("no password on stdin: pipe it as the first line, or run this in a terminal")
    return line.rstrip("\r\n")


main.add_command(moderators)


# --- privacy and export ----------------------------------------------------------------------------


@main.group()
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
    with _transaction(ctx) as session:
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


SINCE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%SZ"]


def _open_for_writing(path: Path) -> TextIO:
    try:
        return path.open("w", encoding="utf-8", newline="")
    except OSError as error:
        raise click.ClickException(f"cannot write {path}: {error.strerror or error}") from None


@main.command()
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="File (default stdout).")
@click.option("--site", "site_name", default=None, help="Only this site's comments.")
@click.option(
    "--since",
    type=click.DateTime(SINCE_FORMATS),
    default=None,
    help="Only decisions from this UTC date or time on (2026-11-01, or 2026-11-01T09:30:00 with or without Z).",
)
@click.option("--body/--no-body", default=True, show_default=True, help="Include the comment text.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
@click.pass_context
def export(
    ctx: click.Context,
    fmt: str,
    output: Path | None,
    site_name: str | None,
    since: Any,
    body: bool,
    progress: bool,
) -> None:
    """Write decisions and moderator verdicts as JSON lines or CSV (README lists the columns)."""
    from datetime import UTC

    from moderation.export import ExportQuery, write_export

    with _transaction(ctx) as session:
        # Read-only and possibly long: on SQLite a snapshot, not the write lock intake and workers need.
        session.connection(execution_options={SQLITE_BEGIN: "DEFERRED"})
        site_id = None
        if site_name is not None:
            try:
                site_id = require_site(session, site_name).id
            except SiteError as error:
                raise click.ClickException(str(error)) from None
        query = ExportQuery(site_id, since.replace(tzinfo=UTC) if since else None, with_body=body)
        with contextlib.ExitStack() as files:
            out = files.enter_context(_open_for_writing(output)) if output else sys.stdout
            written = write_export(session, query, out, fmt, progress=sys.stderr if progress else None)
    click.echo(f"exported {written} row(s)", err=True)
