"""A local HTTP server playing the website: receives decision callbacks and verifies their signatures."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.services import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def event(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


# Answers the site gives: (status, headers), or with a body (status, headers, body), or None for "hang"
# (no answer until the client gives up).
Answer = tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes] | None
Responder = Callable[[int], Answer]


def always(status: int, **headers: str) -> Responder:
    return lambda _attempt: (status, headers)


@dataclass
class SiteServer:
    secret: str = ""
    responder: Responder = field(default_factory=lambda: always(204))
    received: list[Received] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/moderation-callback"

    def start(self) -> SiteServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(outer.secret).verify(body, headers)
                    verified = True
                except (WebhookVerificationError, ValueError):
                    verified = False
                with outer._lock:
                    outer.received.append(Received(headers, body, verified))
                    attempt = len(outer.received)
                answer = outer.responder(attempt)
                if answer is None:
                    threading.Event().wait(30)
                    return
                status, extra, *rest = answer
                content = rest[0] if rest else b""
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                with contextlib.suppress(OSError):  # a client that read enough may hang up
                    self.wfile.write(content)

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.event for r in self.received]
