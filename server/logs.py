"""Structured logs: one JSON object per line, carrying the ids passed in ``extra`` (comment_id, ...)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# The name of configure_logging's handler on the root logger: gunicorn's error log joins it when it is there.
HANDLER_NAME = "moderation"


def is_configured() -> bool:
    """Whether configure_logging set up this process's logging (not, e.g., the benchmark's bare reference)."""
    return any(handler.get_name() == HANDLER_NAME for handler in logging.getLogger().handlers)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Migrations run at every command start, and matplotlib builds its font cache on an install's first
    # report ("generated new fontManager"): routine chatter, while their warnings are not.
    for chatty in ("alembic", "matplotlib"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    # httpx logs every request's full URL at INFO: a callback URL's user:password@ or ?token= is a
    # credential for the site's endpoint, and no secret belongs in a log (DESIGN 8).
    for client_logger in ("httpx", "httpcore"):
        logging.getLogger(client_logger).setLevel(max(logging.WARNING, root.level))
