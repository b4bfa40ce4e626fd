"""The `moderation` console script. Prometheus picks single- or multi-process mode when it is first
imported, so the metrics folder is chosen here, before anything imports it, and inherited by every
process the command starts (gunicorn workers, Celery pool processes)."""

import os
import sys
from pathlib import Path

# Only the service's own processes share the metrics folder; a one-off command (train, sites, --help...)
# keeps its counts in memory, so it neither creates the folder nor adds to what web's /metrics reports.
SERVING_COMMANDS = frozenset({"web", "worker", "beat", "run"})


def main() -> None:
    if _command(sys.argv[1:]) in SERVING_COMMANDS and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        folder = _var_dir().resolve() / "metrics"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # before click runs: said as click says its errors
            sys.exit(f"Error: cannot create VAR_DIR's metrics folder {folder}: {error.strerror or error}")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    from server.cli import main as cli

    cli()


def _var_dir() -> Path:
    """VAR_DIR as the settings read it, whatever the case of its name (``var_dir=...`` too); without
    importing them, which would import what imports Prometheus before its folder is chosen."""
    return Path(next((value for name, value in os.environ.items() if name.upper() == "VAR_DIR"), "var"))


def _command(args: list[str]) -> str | None:
    """The subcommand's name (the group itself takes no option with a value)."""
    return next((arg for arg in args if not arg.startswith("-")), None)
