"""The `moderation` console script. Prometheus picks single- or multi-process mode when it is first
imported, so the metrics folder is chosen here, before anything imports it, and inherited by every
process the command starts (gunicorn workers, Celery pool processes)."""

import os
from pathlib import Path


def main() -> None:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        folder = Path(os.environ.get("VAR_DIR", "var")).resolve() / "metrics"
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    from server.cli import main as cli

    cli()
