"""The web server's settings, as gunicorn reads them, and gunicorn's own log lines."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from gunicorn.config import Config

from server.factory import DRAIN_MAX_BYTES, DRAIN_SECONDS
from server.gunicorn_app import _Gunicorn, options
from tests.support.processes import start_web

# What gunicorn's master and worker each say once from start to a SIGTERM stop (to the process group: the
# worker may exit before the master says it is handling the signal; by timing, gunicorn may add a line such
# as "Worker (pid:N) was sent SIGTERM!").
GUNICORN_LINES = [
    "Starting gunicorn",
    "Listening at: http://127.0.0.1:",
    "Using worker: gthread",
    "Booting worker with pid: ",
    "Handling signal: term",
    "Worker exiting (pid: ",
    "Shutting down: Master",
]


def test_gunicorn_takes_every_setting_and_opens_no_control_socket() -> None:
    server = _Gunicorn(options("127.0.0.1", 8123, 2), lambda: None)  # type: ignore[arg-type, return-value]
    assert (server.cfg.bind, server.cfg.workers, server.cfg.threads) == (["127.0.0.1:8123"], 2, 4)
    assert server.cfg.worker_class_str == "gthread" and server.cfg.proc_name == "moderation-web"
    if "control_socket_disable" in Config().settings:  # newer gunicorn
        assert server.cfg.control_socket_disable is True
    assert server.cfg.accesslog is None  # no access log: it would hold the authors' IP addresses


def web_env(tmp_path: Path, redis_server_url: str, log_format: str = "json") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "LOG_"))}
    return env | {
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'moderation.db'}",
        "REDIS_URL": redis_server_url,
        "SECRET_KEY": "test-secret-key-" * 3,
        "LOG_FORMAT": log_format,
        "LOG_LEVEL": "INFO",
    }


def run_web(tmp_path: Path, redis_server_url: str, log_format: str) -> list[str]:
    """`moderation web` started, answering, stopped with SIGTERM: the non-empty lines it wrote."""
    web, _ = start_web(web_env(tmp_path, redis_server_url, log_format), tmp_path / "web.log")
    web.stop()
    assert web.process is not None and web.process.returncode == 0, web.log()  # stopped by SIGTERM, not killed
    return [line for line in web.log().splitlines() if line.strip()]


@pytest.mark.slow
def test_gunicorn_writes_json_lines_like_the_service(tmp_path: Path, redis_server_url: str) -> None:
    lines = run_web(tmp_path, redis_server_url, "json")
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}\n\n" + "\n".join(lines))
    assert all(isinstance(entry.get("level"), str) and isinstance(entry.get("message"), str) for entry in entries)
    gunicorn = [entry for entry in entries if entry.get("logger") == "gunicorn.error"]
    assert _each_once([entry["message"] for entry in gunicorn]), gunicorn
    assert {entry["level"] for entry in gunicorn if _which(entry["message"]) in GUNICORN_LINES} == {"INFO"}


@pytest.mark.slow
def test_gunicorn_writes_the_services_text_lines_when_asked(tmp_path: Path, redis_server_url: str) -> None:
    lines = run_web(tmp_path, redis_server_url, "text")
    for line in lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
    # The application's text format: "<date> <time> LEVEL logger: message", not gunicorn's "[date] [pid] [INFO]".
    gunicorn = [line.partition(" INFO gunicorn.error: ")[2] for line in lines if " INFO gunicorn.error: " in line]
    assert _each_once(gunicorn), lines
    assert not [line for line in lines if line.startswith("[")], lines


def _each_once(messages: list[str]) -> bool:
    """Every expected line there, none twice (a second handler would double them all)."""
    seen = Counter(map(_which, messages))
    return all(seen[start] == 1 for start in GUNICORN_LINES)


def _which(message: str) -> str:
    return next((start for start in GUNICORN_LINES if message.startswith(start)), message)


@pytest.mark.slow
def test_a_connection_that_sent_a_body_too_large_still_carries_the_next_request(
    tmp_path: Path, redis_server_url: str
) -> None:
    """The refused body was left unread and gunicorn dropped the connection while saying keep-alive: a client
    that reuses it (Node's agent) lost its next comment on the closed socket (a site integrator's test)."""
    web, base = start_web(web_env(tmp_path, redis_server_url), tmp_path / "web.log")
    connection = http.client.HTTPConnection(urlsplit(base).netloc, timeout=10)
    try:
        too_large = b'{"body": "' + b"x" * 400_000 + b'"}'
        connection.request("POST", "/webhooks/comments", too_large, {"Content-Type": "application/json"})
        refused = connection.getresponse()
        refused.read()
        assert refused.status == 413 and not refused.will_close
        connection.request("POST", "/webhooks/comments", b"{}", {"Content-Type": "application/json"})
        assert connection.getresponse().status == 400  # answered (unsigned), on the same connection
    finally:
        connection.close()
        web.stop()


def post_head(base: str, length: int | None) -> tuple[socket.socket, bytes]:
    """A connection to ``base`` and the head of a webhook POST with that Content-Length (None: chunked)."""
    address = urlsplit(base)
    sock = socket.create_connection((address.hostname or "127.0.0.1", address.port or 80), timeout=30)
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    head = f"POST /webhooks/comments HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    return sock, head.encode()


def answer_head(sock: socket.socket) -> bytes:
    """The status line and headers the server sent (lower-cased), read up to the blank line."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        part = sock.recv(64 * 1024)
        if not part:
            break
        answer += part
    return answer.partition(b"\r\n\r\n")[0].lower()


def answer_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """All the server sent (lower-cased) within ``seconds``, and whether it then closed the connection."""
    sock.settimeout(max(0.1, seconds))
    answer = b""
    try:
        while part := sock.recv(64 * 1024):
            answer += part
    except ConnectionResetError:  # closed while the client was still sending
        pass
    except TimeoutError:
        return answer.lower(), False
    return answer.lower(), True


def trickle(sock: socket.socket, stop: threading.Event) -> None:
    """A byte of body every 0.1 s, until the server stops taking them or the test is over."""
    with contextlib.suppress(OSError):
        while not stop.wait(0.1):
            sock.sendall(b" ")


@pytest.mark.slow
def test_a_slow_sender_of_a_body_too_large_gets_its_413_and_frees_its_thread(
    tmp_path: Path, redis_server_url: str
) -> None:
    """A refused body is read on only for DRAIN_SECONDS, however the client sends it: one that stops, or sends a
    byte at a time, held a gunicorn thread for as long as it liked (every thread of the worker, here); now it gets
    its 413, and the connection is closed."""
    web, base = start_web(web_env(tmp_path, redis_server_url), tmp_path / "web.log")
    limit = 384 * 1024  # MAX_BODY_BYTES's default
    stop = threading.Event()
    senders: list[socket.socket] = []
    tricklers: list[threading.Thread] = []
    try:
        # As many as a worker has threads, each with a body over the limit and under what is drained: half stop
        # sending, half send a byte every 0.1 s; of each half, one declares its length and one is sent chunked.
        for index in range(options("127.0.0.1", 0, 1)["threads"]):
            sock, head = post_head(base, 1_000_000 if index % 2 else None)
            if index % 2:
                sock.sendall(head + b" " * 1024)
            else:  # a chunk longer than the limit, sent past the limit (so refused) but not to its end
                sock.sendall(head + b"%x\r\n" % 1_000_000 + b" " * (limit + 1024))
            senders.append(sock)
            if index >= 2:
                tricklers.append(threading.Thread(target=trickle, args=(sock, stop), daemon=True))
        started = time.monotonic()
        for thread in tricklers:
            thread.start()
        bound = DRAIN_SECONDS + 2  # room for a busy machine (gunicorn's own drain gave up after 5 s)
        # Behind them, another request waits for a thread: it has one when the first of them gives up.
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
        assert time.monotonic() - started < bound
        for sock in senders:
            answer, closed = answer_until_closed(sock, started + bound - time.monotonic())
            assert answer.startswith(b"http/1.1 413 ") and b"\r\nconnection: close\r\n" in answer, answer
            assert b'"error":"too_large"' in answer.replace(b" ", b"") and closed, answer
    finally:
        stop.set()
        for sock in senders:
            sock.close()
        web.stop()


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_too_large_to_drain_is_refused_with_connection_close(
    tmp_path: Path, redis_server_url: str, chunked: bool
) -> None:
    """Past DRAIN_MAX_BYTES the connection is given up, and the 413 says so: gunicorn dropped the application's
    "Connection: close" (a hop-by-hop header) and said keep-alive on a connection it then closed. A chunked body
    is read no further than one with a length would be."""
    web, base = start_web(web_env(tmp_path, redis_server_url), tmp_path / "web.log")
    size = DRAIN_MAX_BYTES + 1024 * 1024
    sock, head = post_head(base, None if chunked else size)
    body = b"%x\r\n" % size + b" " * size + b"\r\n0\r\n\r\n" if chunked else b" " * 1024

    def send() -> None:
        with contextlib.suppress(OSError):  # the server closes the connection before the end
            sock.sendall(head + body)

    sender = threading.Thread(target=send, daemon=True)
    try:
        sender.start()
        answer = answer_head(sock)
        assert answer.startswith(b"http/1.1 413 ") and b"\r\nconnection: close" in answer, answer
    finally:
        sock.close()
        sender.join(10)
        web.stop()


def _slowly(size: int, seconds: float, step: int = 16 * 1024) -> Iterator[bytes]:
    """``size`` bytes of padding, spread evenly over ``seconds``."""
    pause = seconds / (size / step)
    for sent in range(0, size, step):
        yield b" " * min(step, size - sent)
        time.sleep(pause)


@pytest.mark.slow
def test_a_sender_on_a_slow_link_is_told_413_not_reset(tmp_path: Path, redis_server_url: str) -> None:
    """1 MiB at about 2 Mbit/s, sent as Python's http.client sends it (the whole body, then the answer read): cut
    off at DRAIN_SECONDS, it got a reset, not its 413, and a sender that retries on connection errors would retry
    a permanent refusal. A client that keeps sending is read on."""
    web, base = start_web(web_env(tmp_path, redis_server_url), tmp_path / "web.log")
    size = 1024 * 1024
    address = urlsplit(base)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=30)
    try:
        headers = {"Content-Type": "application/json", "Content-Length": str(size)}
        connection.request("POST", "/webhooks/comments", body=_slowly(size, DRAIN_SECONDS * 2), headers=headers)
        assert connection.getresponse().status == 413
    finally:
        connection.close()
        web.stop()


@pytest.mark.slow
def test_refused_heads_left_open_do_not_hold_up_the_worker(tmp_path: Path, redis_server_url: str) -> None:
    """A head with a Content-Length past DRAIN_MAX_BYTES and no body, its socket left open: its 413 closes the
    connection, and gunicorn's close waited up to 2 s each, on the worker's main thread, for the client to close
    its end; two of them kept the process from answering anyone for seconds. The read side is shut first now."""
    web, base = start_web(web_env(tmp_path, redis_server_url), tmp_path / "web.log")
    held: list[socket.socket] = []
    try:
        for _ in range(2):
            sock, head = post_head(base, DRAIN_MAX_BYTES + 1)
            sock.sendall(head)
            held.append(sock)
        time.sleep(0.3)
        started = time.monotonic()
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
        assert time.monotonic() - started < 1.0
    finally:
        for sock in held:
            sock.close()
        web.stop()
