"""A body sent with ``Transfer-Encoding: chunked`` (no Content-Length) meets MAX_BODY_BYTES as any other does.

Werkzeug only caps such a stream: past the limit it stops reading, and raises 413 only on a later read, so
without the app's own check a body over the limit reached the view cut short (a 400 "not valid JSON", or a
401 from a signature over the whole body). Through Flask's test client (an environ as a server that ends
the stream itself, as gunicorn does for a chunked body, builds it) and through the real `moderation web`.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select
from werkzeug.test import TestResponse

from models.entities import Comment
from server.settings import Settings
from tests.conftest import SiteCredentials
from tests.support.processes import Stack
from tests.support.signing import comment_event, encode, signed_headers

WEBHOOK = "/webhooks/comments"


def erase_path(site: str) -> str:
    return f"/api/authors/erase?site={site}"


def padded(document: dict[str, Any], size: int) -> bytes:
    """The JSON document followed by spaces (still the same JSON) up to exactly ``size`` bytes."""
    body = json.dumps(document).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def comments(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(Comment)) or 0)


def post_streamed(client: FlaskClient, path: str, body: bytes, headers: dict[str, str]) -> TestResponse:
    """As a server hands the app a chunked body: no CONTENT_LENGTH, and a stream it ends itself."""
    return client.post(
        path,
        input_stream=io.BytesIO(body),
        headers={**headers, "transfer-encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_a_streamed_webhook_body_over_the_limit_is_413_not_cut_short(
    client: FlaskClient, site: SiteCredentials, engine: Engine
) -> None:
    limit = client.application.config["MAX_CONTENT_LENGTH"]
    over = [
        padded(comment_event(site.name, "c-1"), limit + 1),  # was cut to the signed JSON less a space: 401
        padded(comment_event(site.name, "c-1"), limit + 64 * 1024),
        encode(comment_event(site.name, "c-1", body="y" * limit)),  # was cut inside the string: 400
    ]
    for body in over:
        response = post_streamed(client, WEBHOOK, body, signed_headers(site.secret, body))
        assert (response.status_code, response.get_json()["error"]) == (413, "too_large"), response.get_json()
    assert comments(engine) == 0


def test_a_streamed_erasure_request_over_the_limit_is_413(client: FlaskClient, site: SiteCredentials) -> None:
    limit = client.application.config["MAX_CONTENT_LENGTH"]
    body = padded({"email": "jan@example.org"}, limit + 1)
    response = post_streamed(client, erase_path(site.name), body, signed_headers(site.secret, body))
    assert (response.status_code, response.get_json()["error"]) == (413, "too_large"), response.get_json()


@pytest.mark.parametrize("streamed", [True, False], ids=["chunked", "content-length"])
def test_a_body_of_exactly_the_limit_is_accepted(
    client: FlaskClient, site: SiteCredentials, engine: Engine, streamed: bool
) -> None:
    limit = client.application.config["MAX_CONTENT_LENGTH"]
    body = padded(comment_event(site.name, "c-1"), limit)
    headers = signed_headers(site.secret, body)
    response = (
        post_streamed(client, WEBHOOK, body, headers) if streamed else client.post(WEBHOOK, data=body, headers=headers)
    )
    assert response.status_code == 202, response.get_json()
    assert comments(engine) == 1
    erasure = padded({"email": "jan@example.org"}, limit)
    headers = signed_headers(site.secret, erasure)
    erased = (
        post_streamed(client, erase_path(site.name), erasure, headers)
        if streamed
        else client.post(erase_path(site.name), data=erasure, headers=headers)
    )
    assert (erased.status_code, erased.get_json()["comments_erased"]) == (200, 1), erased.get_json()


def test_a_small_streamed_body_and_a_bodiless_request_are_read_as_before(
    client: FlaskClient, site: SiteCredentials
) -> None:
    body = encode(comment_event(site.name, "c-1"))
    assert post_streamed(client, WEBHOOK, body, signed_headers(site.secret, body)).status_code == 202
    # As gunicorn hands over a request without a body: no CONTENT_LENGTH, an input stream that is empty.
    bodiless = client.get("/healthz", input_stream=io.BytesIO(b""), environ_overrides={"wsgi.input_terminated": True})
    assert bodiless.status_code == 200


@pytest.fixture
def web(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """`moderation web` (gunicorn) on this test's database: its base URL."""
    stack = Stack(settings, tmp_path)
    try:
        _, base = stack.web()
        yield base
    finally:
        stack.stop_all()


def send_chunked(base: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST ``body`` in 16 KiB chunks with no Content-Length; the status and the JSON answer."""
    address = urlsplit(base)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=30)
    try:
        chunks = (body[start : start + 16 * 1024] for start in range(0, len(body), 16 * 1024))
        connection.request("POST", path, body=chunks, headers=headers, encode_chunked=True)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def send_raw(base: str, request: bytes) -> bytes:
    """``request`` as bytes on one connection, its write side then shut: all the server answers."""
    address = urlsplit(base)
    with socket.create_connection((address.hostname or "127.0.0.1", address.port or 80), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while part := sock.recv(64 * 1024):
            answer += part
    return answer


@pytest.mark.slow
def test_gunicorn_answers_a_chunked_body_over_the_limit_with_413(
    web: str, settings: Settings, site: SiteCredentials, engine: Engine
) -> None:
    limit = settings.max_body_bytes
    over = padded(comment_event(site.name, "c-1"), limit + 1)
    status, answer = send_chunked(web, WEBHOOK, over, signed_headers(site.secret, over))
    assert (status, answer["error"]) == (413, "too_large"), answer
    erasure = padded({"email": "jan@example.org"}, limit + 1)
    status, answer = send_chunked(web, erase_path(site.name), erasure, signed_headers(site.secret, erasure))
    assert (status, answer["error"]) == (413, "too_large"), answer
    assert comments(engine) == 0

    exact = padded(comment_event(site.name, "c-2"), limit)
    status, answer = send_chunked(web, WEBHOOK, exact, signed_headers(site.secret, exact))
    assert (status, answer["status"]) == (202, "pending"), answer
    small = encode(comment_event(site.name, "c-3"))
    status, answer = send_chunked(web, WEBHOOK, small, signed_headers(site.secret, small))
    assert (status, answer["status"]) == (202, "pending"), answer
    assert comments(engine) == 2

    # Chunked framing the server cannot parse is the client's mistake: 400, never a 500.
    malformed = (
        f"POST {WEBHOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
    )
    raw = send_raw(web, malformed.encode())
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:300]


def chunked_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A POST of ``body`` in 16 KiB chunks, as bytes on the wire."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(part), part)
        for part in (body[start : start + 16 * 1024] for start in range(0, len(body), 16 * 1024))
    )
    return head.encode() + b"\r\n" + chunks + b"0\r\n\r\n"


@pytest.mark.slow
def test_a_keep_alive_connection_carries_the_next_request_after_a_chunked_body_over_the_limit(
    web: str, settings: Settings, site: SiteCredentials, engine: Engine
) -> None:
    """The rest of a refused chunked body is read to its end, so the next request on the connection is read
    from its first byte. gunicorn read on by itself only 64 KiB of it, then dropped the connection it had just
    said was kept alive: the client's next comment was lost on it."""
    over = padded(comment_event(site.name, "c-1"), settings.max_body_bytes + 1024 * 1024)
    address = urlsplit(web)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=30)
    try:
        chunks = (over[start : start + 16 * 1024] for start in range(0, len(over), 16 * 1024))
        connection.request("POST", WEBHOOK, body=chunks, headers=signed_headers(site.secret, over), encode_chunked=True)
        refused = connection.getresponse()
        assert (refused.status, json.loads(refused.read())["error"]) == (413, "too_large")
        assert not refused.will_close
        kept = connection.sock
        small = encode(comment_event(site.name, "c-2"))
        connection.request("POST", WEBHOOK, small, signed_headers(site.secret, small))
        answer = connection.getresponse()
        assert (answer.status, json.loads(answer.read())["status"]) == (202, "pending")
        assert connection.sock is kept  # the same connection, not a new one
    finally:
        connection.close()

    # Sent at once behind the refused body (pipelined), the next request is still read as a request.
    raw = send_raw(
        web,
        chunked_request(WEBHOOK, over, signed_headers(site.secret, over))
        + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    answers = raw.split(b"HTTP/1.1 ")[1:]
    assert [answer[:3] for answer in answers] == [b"413", b"200"], raw[:1000]
    assert comments(engine) == 1
