"""The `moderation` command: operators' interface to the service (names are a stable interface).

The `main` group is here; each group of commands is in the module named for it.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from server.cli import (
    authors,
    classify,
    comments,
    common,
    export,
    model_registry,
    moderators,
    services,
    sites,
    training,
)
from server.logs import configure_logging
from server.settings import Settings, describe_invalid_settings


class _Commands(click.Group):
    """The `moderation` group: a database error ends any command with one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OperationalError as error:
            # Connecting is checked where every command starts (`common.upgrade`, `moderation run`); this is a
            # failure after that (a lock, a timeout, a dropped connection): the URL is not the suspect.
            raise click.ClickException(
                f"database error: {common.driver_message(common.settings(ctx), error)}"
            ) from None


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


main.add_command(services.migrate)
main.add_command(services.web)
main.add_command(services.worker)
main.add_command(services.beat)
main.add_command(services.run)
main.add_command(sites.sites)
main.add_command(training.train)
main.add_command(training.data)
main.add_command(model_registry.models)
main.add_command(training.evaluate)
main.add_command(comments.reclassify)
main.add_command(classify.classify)
main.add_command(moderators.moderators)
main.add_command(authors.authors)
main.add_command(export.export)
