"""Builds the pieces of a process from Settings: the Runtime, the Celery app and the Flask app."""

from __future__ import annotations

import contextlib
import io
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from types import TracebackType
from typing import IO, TYPE_CHECKING

from flask import Flask, jsonify, redirect, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.engine import make_url
from werkzeug.exceptions import BadRequest, ClientDisconnected, HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wsgi import get_content_length

from dashboard import init_app as init_dashboard
from dashboard import method_not_allowed_page, wants_dashboard_page
from dashboard import not_found as dashboard_not_found
from models.db import create_db_engine, make_session_factory
from moderation.callbacks import RetryPolicy
from moderation.registry import ModelStore
from moderation.runtime import Runtime
from moderation.settled import SettledWork
from moderation.sites import SiteKeyCache
from server.health import bp as health_bp
from server.metrics import bp as metrics_bp
from server.settings import Settings
from webhooks import init_app as init_webhooks
from webhooks.ratelimit import IntakeLimits
from webhooks.signatures import UsedRequestIds
from workers.app import CeleryOptions, ModerationCelery, create_celery
from workers.publisher import CeleryPublisher

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)


def build_runtime(settings: Settings, celery: ModerationCelery) -> Runtime:
    engine = create_db_engine(settings.effective_database_url)
    sessions = make_session_factory(engine)
    return Runtime(
        sessions=sessions,
        models=ModelStore(sessions, settings.model_check_interval_seconds, model_dir=settings.effective_model_dir),
        publisher=CeleryPublisher(celery),
        settled=SettledWork(settings.broker_url),
        retry=RetryPolicy(
            base_seconds=settings.callback_retry_base_seconds,
            max_seconds=settings.callback_retry_max_seconds,
            max_attempts=settings.callback_max_attempts,
            lease_seconds=max(60.0, settings.callback_timeout_seconds * 3),
        ),
        outbox_quiet=timedelta(seconds=settings.outbox_quiet_seconds),
        callback_timeout=settings.callback_timeout_seconds,
        classify_batch=settings.classify_batch_size,
        secret_overlap=settings.secret_overlap,
        model_dir=settings.effective_model_dir,
        data_dir=settings.data_dir,
    )


def build_celery(settings: Settings) -> ModerationCelery:
    options = CeleryOptions(
        broker_url=settings.broker_url,
        relay_interval=settings.outbox_relay_interval_seconds,
        callback_retry_interval=settings.callback_retry_interval_seconds,
        retrain_interval_hours=settings.retrain_interval_hours,
        retain_personal_days=settings.retain_personal_days,
        retain_closed_days=settings.retain_closed_days,
    )
    celery: ModerationCelery | None = None

    def runtime_factory() -> Runtime:
        assert celery is not None
        return build_runtime(settings, celery)

    celery = create_celery(options, runtime_factory)
    return celery


def session_secret(settings: Settings) -> str:
    """SECRET_KEY, or one generated once and kept in VAR_DIR so sessions survive restarts."""
    if settings.secret_key:
        return settings.secret_key
    path = settings.var_dir / "secret_key"
    if not path.exists():
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def warn_if_session_key_is_per_host(settings: Settings) -> None:
    """A generated key is this host's own: behind a load balancer, a session signed by one web host would
    not verify on another. A database other than SQLite is the sign that there may be several."""
    if settings.secret_key is None and make_url(settings.effective_database_url).get_backend_name() != "sqlite":
        log.warning(
            "SECRET_KEY is unset: dashboard sessions are signed with a key generated on this host into %s; "
            "several web hosts need the same SECRET_KEY (generate one with: openssl rand -hex 32)",
            (settings.var_dir / "secret_key").resolve(),
        )


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings()
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SECRET_KEY=session_secret(settings),
        SETTINGS=settings,
        PUBLIC_URL=settings.public_url,
    )
    if settings.trusted_proxies:
        # Only as many hops as the operator says: a header from anyone further out could be forged. The
        # scheme is the outermost proxy's alone (proxies inside it do not add to X-Forwarded-Proto), and the
        # host is not taken from the proxy: PUBLIC_URL names the outside address where links need it.
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=1)  # type: ignore[method-assign]
    app.wsgi_app = CloseWhenSaid(app.wsgi_app)  # type: ignore[method-assign]
    # First of all the hooks: before anything (CSRF's form parsing, a view) reads the body.
    app.before_request(read_streamed_body)
    celery = build_celery(settings)
    app.extensions["celery"] = celery
    app.extensions["moderation"] = celery.runtime
    IntakeLimits(
        settings.broker_url, settings.rate_limit_per_site, settings.rate_limit_per_author_ip, app.config["SECRET_KEY"]
    ).init_app(app)
    app.extensions["site_keys"] = SiteKeyCache(settings.site_cache_seconds)
    app.extensions["api_request_ids"] = UsedRequestIds(settings.broker_url, app.config["SECRET_KEY"])

    init_webhooks(app)
    app.register_blueprint(health_bp)
    app.register_blueprint(metrics_bp)
    init_dashboard(app)
    _json_errors(app)

    @app.get("/")
    def front_door() -> ResponseReturnValue:
        # Whoever opens the service's bare address is a person looking for the dashboard.
        return redirect(url_for("dashboard.index"))

    return app


READ_STEP = 64 * 1024


# A refused body is read to its end, up to this much in all, so that a keep-alive connection can carry the client's
# next request (Node's agent reuses it, and lost its next comment when gunicorn dropped the socket). Past it the
# connection is given up on, and the 413 says "Connection: close" (see CloseWhenSaid).
DRAIN_MAX_BYTES = 4 * 1024 * 1024
DRAIN_CHUNK_BYTES = 8 * 1024  # a quarter of DRAIN_WINDOW_BYTES: a read ends within a window at the rate kept
# ... and while the client keeps sending: each DRAIN_SECONDS must bring DRAIN_WINDOW_BYTES more of it (128 kbit/s),
# DRAIN_MOST_SECONDS in all. A thread reading a request already refused is one of the 4 a web process has for
# everyone's comments: a client that stopped sending, or sent a byte now and then (slowloris), held it for as long as
# it liked, and is now cut off after DRAIN_SECONDS; one on a slow link that sends its whole body before it reads the
# answer (as Python's http.client does) still gets its 413 rather than a reset. Past these the client gets its 413
# with "Connection: close", and opens another connection for its next request.
DRAIN_SECONDS = 2.0
DRAIN_WINDOW_BYTES = 32 * 1024
DRAIN_MOST_SECONDS = 40.0
# How much of a chunked body read_streamed_body read before refusing it (the environ key): the drain reads the rest.
STREAMED_BYTES_READ = "moderation.streamed_bytes_read"


class CloseWhenSaid:
    """The application's "Connection: close" made the server's own: it says it, and closes the connection.

    gunicorn drops an application's Connection header (hop-by-hop: the server's to set) and answers keep-alive by
    itself, so a 413 whose body was not read to its end said keep-alive and then the connection closed under the
    client's next request. gunicorn's start_response is its response's own method, whose force_close() makes it
    say close and close (tests/test_gunicorn_app.py holds gunicorn to it). Under a server whose start_response is
    not such, the header goes on as the application set it.
    """

    def __init__(self, wsgi_app: WSGIApplication) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def start(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            if any(name.lower() == "connection" and value.lower() == "close" for name, value in headers):
                force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
                if callable(force_close):
                    force_close()
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


class _ReadWatch:
    """Reads on gunicorn's socket ended when the client stops sending (less than DRAIN_WINDOW_BYTES in a window of
    DRAIN_SECONDS) or after DRAIN_MOST_SECONDS: then its read side is shut (``_stop_reading``).

    gunicorn's socket blocks without a timeout, and one read of its body stream is as many recv() as it takes to
    gather the bytes asked for, so neither a check between reads nor a socket timeout (it bounds each recv(), and
    a client sending a byte just within it keeps a read going) ends a read. A timer looks at each window's bytes
    instead. Without a socket (not under gunicorn), only the check of the whole time before each read holds.
    """

    def __init__(self, sock: socket.socket | None) -> None:
        self._sock = sock
        self._end = time.monotonic() + DRAIN_MOST_SECONDS
        self._lock = threading.Lock()
        self._done = False
        self._read = 0
        self._read_at_last_look = 0
        self._timer: threading.Timer | None = None
        self.expired = False  # the read side was shut: the connection can carry nothing more

    def __enter__(self) -> _ReadWatch:
        if self._sock is not None:
            self._look_again()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        with self._lock:  # a look already running leaves the socket alone after this
            self._done = True
            if self._timer is not None:
                self._timer.cancel()

    def allows_a_read(self) -> bool:
        return not self.expired and time.monotonic() < self._end

    def count(self, size: int) -> None:
        self._read += size

    def _look_again(self) -> None:
        self._timer = threading.Timer(DRAIN_SECONDS, self._look)
        self._timer.daemon = True
        self._timer.start()

    def _look(self) -> None:
        with self._lock:
            if self._done:
                return
            if self._read - self._read_at_last_look >= DRAIN_WINDOW_BYTES and time.monotonic() < self._end:
                self._read_at_last_look = self._read
                self._look_again()
                return
            self.expired = True
            _stop_reading(self._sock)


def _stop_reading(sock: socket.socket | None) -> None:
    """Shut the socket's read side (on a duplicate of its descriptor: an SSLSocket's own shutdown() would also drop
    its TLS session). A read waiting on it returns at once, and so does gunicorn's close, which otherwise waits up
    to 2 s, on the worker's main thread, for the client to close its end."""
    if sock is None:
        return
    with contextlib.suppress(OSError), socket.fromfd(sock.fileno(), sock.family, sock.type) as duplicate:
        duplicate.shutdown(socket.SHUT_RD)


def _drain_unread_body() -> bool:
    """Whether the rest of a refused body was read to its end, within DRAIN_MAX_BYTES and while the client kept
    sending (``_ReadWatch``). When it was not, the connection's read side is shut."""
    environ = request.environ
    stream = environ.get("wsgi.input")
    length = request.content_length  # None: chunked, its start read by read_streamed_body
    left = length if length is not None else DRAIN_MAX_BYTES - environ.get(STREAMED_BYTES_READ, 0)
    raw = environ.get("gunicorn.socket")
    sock = raw if isinstance(raw, socket.socket) else None
    if stream is None or left > DRAIN_MAX_BYTES or left < 0:
        _stop_reading(sock)
        return False
    with _ReadWatch(sock) as watch:
        drained = _read_rest(stream, left, length is not None, watch)
    if drained and not watch.expired:
        return True
    _stop_reading(sock)  # read to its end just as the timer shut the socket: given up all the same
    return False


def _read_rest(stream: IO[bytes], left: int, sized: bool, watch: _ReadWatch) -> bool:
    """Whether ``stream`` ended within ``left`` bytes (``sized``: in exactly ``left``) while ``watch`` allowed."""
    try:
        while watch.allows_a_read():
            # A chunked body's end is a read that returns nothing, so one is made past its last byte.
            part = stream.read(min(DRAIN_CHUNK_BYTES, left) if sized else DRAIN_CHUNK_BYTES)
            if not part:
                return not sized  # a body with a length that stops short: the client went away, or was cut off
            watch.count(len(part))
            left -= len(part)
            if left < 0:
                return False
            if left == 0 and sized:
                return True
    except Exception:  # the client gone, a malformed chunk (gunicorn's parse error), a read the watch ended
        log.debug("the rest of a refused body could not be read", exc_info=True)
        return False
    return False


def read_streamed_body() -> None:
    """Hold a body sent without a length (``Transfer-Encoding: chunked``) to MAX_CONTENT_LENGTH: 413 over it.

    Werkzeug reads such a stream (when the server ends it, as gunicorn does) only up to the limit and
    raises 413 on a read after it, which no view makes: a body over the limit arrived cut at the limit, read
    as JSON that does not end (400) or as bytes its signature does not cover (401). So the body is read
    here first, up to one byte past the limit; what fits is handed on as a body with its length, which is
    what Werkzeug checks a Content-Length body against. Requests with a Content-Length are left as they are.
    """
    environ = request.environ
    limit = request.max_content_length
    if limit is None or "wsgi.input_terminated" not in environ or get_content_length(environ) is not None:
        return
    body = _read_at_most(environ["wsgi.input"], limit + 1)
    if len(body) > limit:
        environ[STREAMED_BYTES_READ] = len(body)
        raise RequestEntityTooLarge()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)  # the body is no longer chunked: its length now counts


def _read_at_most(stream: IO[bytes], size: int) -> bytes:
    """Up to ``size`` bytes, fewer only where the stream ends (a read may return less than asked)."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        try:
            part = stream.read(min(remaining, READ_STEP))
        except (OSError, ValueError) as error:  # as Werkzeug's own reads take a broken stream
            raise ClientDisconnected() from error
        except Exception as error:  # the server's own parse error (gunicorn's InvalidChunkSize): the client's
            raise BadRequest("the request body is not validly chunked") from error
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _json_errors(app: Flask) -> None:
    @app.errorhandler(404)
    def not_found(error: Exception) -> ResponseReturnValue:
        if wants_dashboard_page():
            return dashboard_not_found(error)
        return jsonify(error="not_found", message="no such resource"), 404

    @app.errorhandler(405)
    def method_not_allowed(error: HTTPException) -> ResponseReturnValue:
        allow = {name: value for name, value in error.get_headers() if name == "Allow"}
        if wants_dashboard_page():
            return method_not_allowed_page(), 405, allow
        return jsonify(error="method_not_allowed", message="method not allowed here"), 405, allow

    @app.errorhandler(413)
    def too_large(_error: Exception) -> ResponseReturnValue:
        limit = app.config["MAX_CONTENT_LENGTH"]
        drained = _drain_unread_body()
        message = f"the body is over the {limit}-byte limit"
        return jsonify(error="too_large", message=message), 413, {} if drained else {"Connection": "close"}
