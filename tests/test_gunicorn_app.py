"""The web server's settings, as gunicorn reads them."""

from __future__ import annotations

from gunicorn.config import Config

from server.gunicorn_app import _Gunicorn, options


def test_gunicorn_takes_every_setting_and_opens_no_control_socket() -> None:
    server = _Gunicorn(options("127.0.0.1", 8123, 2), lambda: None)  # type: ignore[arg-type, return-value]
    assert (server.cfg.bind, server.cfg.workers, server.cfg.threads) == (["127.0.0.1:8123"], 2, 4)
    assert server.cfg.worker_class_str == "gthread" and server.cfg.proc_name == "moderation-web"
    if "control_socket_disable" in Config().settings:  # newer gunicorn
        assert server.cfg.control_socket_disable is True
