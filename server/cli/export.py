"""`export`: decisions and moderator verdicts as JSON lines or CSV."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from models.db import SQLITE_BEGIN
from server.cli import common

SINCE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%SZ"]
SINCE_FORMS_IN_WORDS = (
    "write a date, 2026-12-01, or a date and time to the second, 2026-12-01T09:30:00 "
    "(a space instead of the T, and a Z at the end, are taken too)"
)


class _SinceDate(click.DateTime):
    """click's DateTime, but its refusal says the forms in words: its own lists the strftime patterns."""

    def __init__(self) -> None:
        super().__init__(SINCE_FORMATS)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"{value!r} is not a UTC date or time: {SINCE_FORMS_IN_WORDS}", param, ctx)


@contextlib.contextmanager
def _write_failure_said(path: Path | None) -> Iterator[None]:
    """A file that cannot be opened, or written to its end (a full disk, a quota, a mount gone), is one line;
    stdout's failures (a closed pipe) are the command line's, as for every command."""
    try:
        yield
    except OSError as error:
        if path is None:
            raise
        raise click.ClickException(f"cannot write {path}: {error.strerror or error}") from None


@click.command()
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="File (default stdout).")
@click.option("--site", "site_name", default=None, help="Only this site's comments.")
@click.option(
    "--since",
    type=_SinceDate(),
    default=None,
    metavar="DATE",
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
    """Write decisions and moderator verdicts as JSON lines or CSV (docs/privacy.md lists the columns)."""
    from datetime import UTC

    from moderation.export import ExportQuery, write_export

    with common.transaction(ctx, create=False) as session:
        # Read-only and possibly long: on SQLite a snapshot, not the write lock intake and workers need.
        session.connection(execution_options={SQLITE_BEGIN: "DEFERRED"})
        site_id = common.site_id_or_all(session, site_name)
        query = ExportQuery(site_id, since.replace(tzinfo=UTC) if since else None, with_body=body)
        # Closing the file writes the last of it, so a full disk can show there too: said the same way.
        with _write_failure_said(output), contextlib.ExitStack() as files:
            out = files.enter_context(output.open("w", encoding="utf-8", newline="")) if output else sys.stdout
            written = write_export(session, query, out, fmt, progress=sys.stderr if progress else None)
    click.echo(f"exported {written} row(s)", err=True)
