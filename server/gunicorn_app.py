"""Gunicorn started from Python, so `moderation web` needs no separate config file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.config import Config


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


def options(host: str, port: int, workers: int, name: str = "moderation-web") -> dict[str, Any]:
    """The web server settings (the benchmark's bare reference runs under exactly these too)."""
    chosen = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": 4,
        "timeout": 60,
        "graceful_timeout": 20,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
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
