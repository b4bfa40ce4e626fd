"""What several `moderation` commands share: the settings, database sessions and schema checks, folders."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from models.db import create_db_engine, make_session_factory
from models.migrate import head_revision, schema_mismatch, schema_revision, upgrade_database
from moderation import registry
from moderation.classifier import ModerationModel
from moderation.sites import SiteError, require_site
from server.settings import Settings, redacted_url


def settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def sessions(settings: Settings, *, create: bool) -> sessionmaker[Session]:
    """Sessions on an up-to-date schema.

    A command that stores what it is given (``create``: `sites add`, `train`) makes a new database, so it
    works on a fresh VAR_DIR without a separate migrate. One that only reads, or changes what must already be
    stored (a site, an account, a model version), refuses a SQLite file that is not there: run from another
    folder, it would leave a stray var/ behind and answer as if the service had nothing.
    One at an older migration is refused, not upgraded: that is `moderation migrate`'s job, once a backup is
    taken, and never the side effect of a `sites list` run to look around before an upgrade.
    """
    if not create:
        refuse_a_missing_database(settings)
    _create_or_check_schema(settings)
    return make_session_factory(create_db_engine(settings.effective_database_url))


@contextlib.contextmanager
def transaction(ctx: click.Context, *, create: bool) -> Iterator[Session]:
    """One transaction on an engine that is disposed afterwards (no pooled connection outlives the command);
    ``create`` as for ``sessions``."""
    factory = sessions(settings(ctx), create=create)
    try:
        with factory.begin() as session:
            yield session
    finally:
        factory.kw["bind"].dispose()


def refuse_a_missing_database(settings: Settings) -> None:
    """Stop, in one line and creating nothing, when the SQLite file the settings name is not there (a
    PostgreSQL database is made by its server's administrator, so it is there or connecting says why not)."""
    path = sqlite_file(settings.effective_database_url)
    if path is None or path.exists():
        return
    if settings.database_url is not None:
        where, choose = "DATABASE_URL", "set DATABASE_URL"
    else:
        where, choose = (
            f"VAR_DIR is {settings.var_dir}",
            "run it in the service's folder or set VAR_DIR (or DATABASE_URL)",
        )
    raise click.ClickException(
        f"no database at {path} ({where}), and this command creates none: {choose} to the service's database; "
        "`moderation migrate` creates a new one"
    )


def active_model(settings: Settings) -> ModerationModel:
    store = registry.ModelStore(
        sessions(settings, create=False), check_interval=0, model_dir=settings.effective_model_dir
    )
    try:
        return store.current()
    except registry.RegistryError as error:
        raise click.ClickException(str(error)) from None


def _create_or_check_schema(settings: Settings) -> None:
    url = settings.effective_database_url
    path = sqlite_file(url)
    if path is None or path.exists():
        try:
            current = schema_revision(url)
        except OperationalError as error:
            raise click.ClickException(cannot_connect(settings, error)) from None
        problem = schema_mismatch(current)
        if problem is not None:
            raise click.ClickException(problem)
        if current is not None:
            return
    upgrade(settings)
    if path is None:
        # An existing but empty database is most likely a mistyped name of another one on the same server:
        # say where the schema went, as a new SQLite file is named in `upgrade`.
        click.echo(f"created the schema ({head_revision()}) in the empty database {redacted_url(url)}", err=True)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (any driver, any query string); None for another database or memory."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def upgrade(settings: Settings) -> None:
    url = settings.effective_database_url
    path = sqlite_file(url)
    make_var_dir(settings)
    created = path if path is not None and not path.exists() else None
    if created is not None:
        only_the_owners(created)
    try:
        upgrade_database(url)
    except OperationalError as error:  # refused, unknown host or database, bad password, unwritable file
        raise click.ClickException(cannot_connect(settings, error)) from None
    if created is not None:
        # Run from another folder, the default VAR_DIR (./var) is a new, empty one: say so rather than
        # let `sites list` answer nothing as if the real database were empty.
        click.echo(f"created a new database {created} (VAR_DIR or DATABASE_URL chooses another)", err=True)


def only_the_owners(path: Path) -> None:
    """Create the empty SQLite file readable and writable by its owner alone (SQLite gives its -wal and -shm
    files the same mode): it holds each site's webhook secrets, password hashes and commenters' personal data,
    which the umask's usual 644 let every user of the host read."""
    with contextlib.suppress(FileExistsError, FileNotFoundError):  # made meanwhile; or no folder: said below
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def cannot_connect(settings: Settings, error: OperationalError) -> str:
    shown = redacted_url(settings.effective_database_url)
    return f"cannot use the database {shown}: {driver_message(settings, error)} (check DATABASE_URL)"


def driver_message(settings: Settings, error: OperationalError) -> str:
    """The driver's message on one line, with any part of the URL's user name and password hidden."""
    reason = " ".join(str(error.orig or error).split())
    url = settings.effective_database_url
    userinfo = url.partition("://")[2].rpartition("@")[0]
    for secret in {userinfo, *userinfo.split(":", 1)[1:], *userinfo.split("@")}:
        if len(secret) >= 3:  # a fragment shorter than that is no secret, and would blot out the message
            reason = reason.replace(secret, "***")
    return reason


def make_var_dir(settings: Settings) -> None:
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


def site_id_or_all(session: Session, site_name: str | None) -> int | None:
    """The id of the site a ``--site NAME`` option names, None for every site; a name no site has ends the
    command with one line."""
    if site_name is None:
        return None
    try:
        return require_site(session, site_name).id
    except SiteError as error:
        raise click.ClickException(str(error)) from None
