"""Gunicorn started from Python, so `moderation web` needs no separate config file."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.config import Config
from gunicorn.glogging import Logger

from server.logs import is_configured


class ProjectLogger(Logger):
    """gunicorn's error log (start, stop, booting worker, worker timeouts and exits) written like the service's.

    gunicorn puts its own plain-text handler on "gunicorn.error" and stops it propagating, so its lines
    ("[2026-...] [pid] [INFO] Starting gunicorn") were the only ones on stderr that a JSON log pipeline could
    not read. Where configure_logging has run (`moderation web`: the master at start, each worker again), the
    lines go to its root handler instead: the same formatter (LOG_FORMAT json or text), stream (stderr) and
    level (LOG_LEVEL), once. A `logger_class` subclass rather than `logconfig_dict`: that one would also turn
    gunicorn's access log on (to stdout), and the access log is off on purpose (no author IPs in logs).
    Without configure_logging (the benchmark's bare reference), gunicorn's own handler stays.
    """

    def setup(self, cfg: Config) -> None:
        super().setup(cfg)  # also run again on a reload (SIGHUP), which re-adds gunicorn's handler
        if not is_configured():
            return
        for handler in [h for h in self.error_log.handlers if getattr(h, "_gunicorn", False)]:
            self.error_log.removeHandler(handler)
        self.error_log.setLevel(logging.NOTSET)  # the root's level: LOG_LEVEL, not gunicorn's own loglevel
        self.error_log.propagate = True


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict[str, Any], load_app: Callable[[], Flask]) -> None:
        self._options = options
        self._load_app = load_app
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._load_app()


def url_host(host: str) -> str:
    """The host as it goes before ``:port`` in a bind address or a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def options(host: str, port: int, workers: int, name: str = "moderation-web") -> dict[str, Any]:
    """The web server settings (the benchmark's bare reference runs under exactly these too)."""
    chosen = {
        "bind": f"{url_host(host)}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": 4,
        "timeout": 60,
        "graceful_timeout": 20,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "logger_class": ProjectLogger,
        "proc_name": name,
    }
    if "control_socket_disable" in Config().settings:
        # Newer gunicorn opens a control socket at one path per user (~/.gunicorn/gunicorn.ctl), which a
        # second server on the host (another instance, the benchmark's reference) would take over; unused here.
        chosen["control_socket_disable"] = True
    return chosen


def run(settings: dict[str, Any], load_app: Callable[[], Flask]) -> None:
    _Gunicorn(settings, load_app).run()


def _service_app() -> Flask:
    from server.wsgi import create_wsgi_app

    return create_wsgi_app()


def serve(host: str, port: int, workers: int) -> None:
    run(options(host, port, workers), _service_app)
