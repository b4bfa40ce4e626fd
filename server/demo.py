"""The demo that `moderation run` sets up: the example site's registration and a demo admin."""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from models.entities import Site
from moderation.accounts import create_moderator, find_moderator, has_password, hash_password
from moderation.callbacks import enable_callbacks
from moderation.sites import create_site, get_site, rotate_secret, validate_callback_url

EXAMPLE_SITE = "example-site"
CHANGED_SINCE = "(changed with `moderation moderators set-password` since; not kept here)"
DEMO_ADMIN = "admin@example.org"
DEMO_ADMIN_FILE = "demo-admin.txt"  # in VAR_DIR


@dataclass(frozen=True)
class Demo:
    site_name: str
    secret_file: Path
    admin_email: str
    admin_password: str | None  # None: changed since it was made here, so not known
    other_sites: int = 0  # sites registered besides the example one


def _write_private(path: Path, text: str) -> None:
    """Readable by the owner only, and whole or not at all: written to a file of its own beside it, then moved
    over it (a disk that fills half-way leaves the old file, not an empty one a next `make run` reads as none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(descriptor, "w") as stream:
            stream.write(text + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)


def forget_demo_password(var_dir: Path, email: str) -> Path | None:
    """After a new password for ``email``: if it is the demo admin's, the demo's password file now says it was
    changed (the file written, else None). The note, not deletion: with no file, the next `make run` would set
    a password of its own over the one just chosen."""
    password_file = var_dir / DEMO_ADMIN_FILE
    if email.strip().lower() != DEMO_ADMIN:
        return None
    if password_file.exists() and password_file.read_text().strip() == CHANGED_SINCE:  # it says so already
        return None
    _write_private(password_file, CHANGED_SINCE)  # also where there was none: the next `make run` keeps it
    return password_file


def ensure_demo(sessions: sessionmaker[Session], var_dir: Path, callback_url: str) -> Demo:
    """Create what is missing, reuse what is there: the site's secret and the admin's password stay put."""
    secret_file = var_dir / f"{EXAMPLE_SITE}.secret"
    password_file = var_dir / DEMO_ADMIN_FILE
    now = datetime.now(UTC)
    with sessions.begin() as session:
        others = session.scalar(select(func.count()).select_from(Site).where(Site.name != EXAMPLE_SITE)) or 0
        site = get_site(session, EXAMPLE_SITE)
        if site is None:
            site, secret = create_site(session, EXAMPLE_SITE, callback_url)
            _write_private(secret_file, secret)
        else:
            site.callback_url = validate_callback_url(callback_url)
            if site.callbacks_paused_by is None:  # a 410 from an earlier run's example site, not a pause
                enable_callbacks(session, site, now)
            if not secret_file.exists() or secret_file.read_text().strip() not in site.usable_secrets(now):
                _write_private(secret_file, rotate_secret(session, site, overlap=now - now, now=now))
        kept = password_file.read_text().strip() if password_file.exists() else ""
        changed = kept == CHANGED_SINCE  # a note, not a password: never one to create an account with
        password = "" if changed else kept
        admin = find_moderator(session, DEMO_ADMIN)
        if admin is None:
            password = password or secrets.token_urlsafe(12)
            create_moderator(session, DEMO_ADMIN, password, "admin", now)
        elif changed:
            return Demo(EXAMPLE_SITE, secret_file, DEMO_ADMIN, None, others)
        elif not password:  # no file (deleted to get a new password, or never written): make one
            password = secrets.token_urlsafe(12)
            admin.password_hash = hash_password(password)
            admin.is_active = True
        elif not has_password(admin, password):
            # Someone set another password since (`moderators set-password`): theirs stands. The file says
            # so rather than going (a missing file would mean "make one" at the next start).
            _write_private(password_file, CHANGED_SINCE)
            return Demo(EXAMPLE_SITE, secret_file, DEMO_ADMIN, None, others)
        _write_private(password_file, password)
    return Demo(EXAMPLE_SITE, secret_file, DEMO_ADMIN, password, others)
