"""The service's processes: `migrate`, `web`, `worker`, `beat` and `run` (all of them on one machine)."""

from __future__ import annotations

import click
from sqlalchemy.exc import OperationalError

from models.db import create_db_engine
from models.migrate import head_revision, is_ahead, missing_from_schema, schema_revision
from moderation.lists import entries_allowing_nobody
from server.cli import common
from server.settings import Settings
from workers.queues import WORKER_QUEUES


@click.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create or upgrade the database schema to the latest migration."""
    settings = common.settings(ctx)
    path = common.sqlite_file(settings.effective_database_url)
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
    common.upgrade(settings)
    after = _schema_revision(settings)
    if before is None:
        click.echo(f"database is up to date: schema created at {after}")
    elif before != after:
        click.echo(f"database is up to date: schema upgraded from {before} to {after}")
    else:
        click.echo(f"database is up to date: schema at {after}, nothing to do")
    _tell_of_allow_entries_allowing_nobody(ctx)


def _tell_of_allow_entries_allowing_nobody(ctx: click.Context) -> None:
    """An upgrade is when an operator learns that entries allowing by name stopped allowing anyone."""
    with common.transaction(ctx, create=True) as session:
        dead = [
            f"{entry.value!r} ({entry.site.name if entry.site else 'all sites'})"
            for entry in entries_allowing_nobody(session)
        ]
    if dead:
        click.echo(
            f"note: {len(dead)} allow-list {'entry names' if len(dead) == 1 else 'entries name'} an author by "
            f"something other than a whole e-mail address and {'allows' if len(dead) == 1 else 'allow'} nobody "
            "(a name is public, anyone can type it): replace them with the authors' addresses on the dashboard's "
            f"Lists page: {', '.join(dead[:5])}{' ...' if len(dead) > 5 else ''}",
            err=True,
        )


def _can_connect(settings: Settings) -> None:
    common.make_var_dir(settings)
    engine = create_db_engine(settings.effective_database_url)
    try:
        with engine.connect():
            pass
    except OperationalError as error:
        raise click.ClickException(common.cannot_connect(settings, error)) from None
    finally:
        engine.dispose()


def _refuse_an_unusable_database(settings: Settings) -> None:
    """Stop a serving process before it starts on a database it cannot use (not there, not migrated, an older
    schema), in one line. An outage after this is left to the tasks' own retries."""
    from server.health import database_problem

    try:
        problem = database_problem(settings.effective_database_url)
    except OperationalError as error:
        raise click.ClickException(common.cannot_connect(settings, error)) from None
    if problem is not None:
        raise click.ClickException(problem)


def _schema_revision(settings: Settings) -> str | None:
    try:
        return schema_revision(settings.effective_database_url)
    except OperationalError as error:
        raise click.ClickException(common.cannot_connect(settings, error)) from None


def _named_host(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """gunicorn reads an empty host as every interface: `--host "$HOST"` with HOST unset must not mean that."""
    if value is not None and not value.strip():
        raise click.BadParameter("must name an interface: 127.0.0.1, or 0.0.0.0 for all", ctx, param)
    return value


@click.command()
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

    settings = common.settings(ctx)
    host = settings.host if host is None else host
    port = settings.port if port is None else port
    if port_in_use(host, port):  # else gunicorn retries for five seconds, logging each try, then gives up
        raise click.ClickException(f"port {port} on {host} is taken: choose a free one with --port or PORT")
    serve(host, port, settings.web_workers if workers is None else workers)


@click.command()
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
    from server.metrics import serve_worker_metrics

    chosen = [name.strip() for name in queues.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(WORKER_QUEUES))
    if not chosen or unknown:
        raise click.BadParameter(f"choose from {', '.join(WORKER_QUEUES)} (got {queues!r})", param_hint="--queues")

    settings = common.settings(ctx)
    # A worker on a database it cannot use would take tasks from the queue and retry each one for ever.
    _refuse_an_unusable_database(settings)
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


@click.command()
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Run Celery beat: outbox relay, callback retries, housekeeping."""
    from server.factory import build_celery

    settings = common.settings(ctx)
    common.make_folder(settings.var_dir, "VAR_DIR")
    # Beat on a database it cannot use would look like a running service while relaying and retrying nothing.
    _refuse_an_unusable_database(settings)
    schedule = settings.var_dir / "celerybeat-schedule"
    build_celery(settings).start(["beat", f"--loglevel={settings.log_level}", f"--schedule={schedule}"])


@click.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Everything on one machine: migrate, train if needed, then web, worker, beat (and Redis if unset)."""
    from server.runner import run_all

    settings = common.settings(ctx)
    _can_connect(settings)  # before anything starts: a database that cannot be used is one line
    raise SystemExit(run_all(settings))
