"""The example site, as a site should be written: its form says why a comment was not posted, and its callback
endpoint is verified and applies only the latest decision."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask.testing import FlaskClient

from examples.site import CommentStore, ExampleConfig, StoredComment, create_app
from tests.support.services import free_port
from tests.support.signing import signed_headers
from webhooks.schemas import CommentData

SECRET = "whsec_" + base64.b64encode(b"example-site-test-secret-32bytes").decode()


@pytest.fixture
def site(tmp_path: Path) -> tuple[FlaskClient, Path]:
    secret_file, data_file = tmp_path / "secret", tmp_path / "comments.json"
    secret_file.write_text(SECRET)
    CommentStore(data_file).save(
        StoredComment("c-1", "Jan", "jan@example.org", "Hello", "token", "2026-12-05T10:00:00Z")
    )
    config = ExampleConfig("example-site", secret_file, "http://127.0.0.1:9", data_file, "http://127.0.0.1:8001")
    return create_app(config).test_client(), data_file


def tell(client: FlaskClient, status: str, decided_at: str, message_id: str) -> int:
    data = {"comment_id": "c-1", "status": status, "reasons": [], "decided_at": decided_at}
    body = json.dumps({"type": "comment.decided", "data": data}).encode()
    headers = signed_headers(SECRET, body, message_id=message_id)
    return client.post("/moderation-callback", data=body, headers=headers).status_code


def stored_status(data_file: Path) -> str:
    return str(CommentStore(data_file).get("c-1").status)  # type: ignore[union-attr]


def test_a_late_callback_of_an_older_decision_does_not_undo_a_newer_one(site: tuple[FlaskClient, Path]) -> None:
    client, data_file = site
    assert tell(client, "rejected", "2026-12-05T10:05:00+00:00", "msg_verdict") == 204  # the moderator's
    assert tell(client, "approved", "2026-12-05T10:00:01+00:00", "msg_model") == 204  # the model's, retried late
    assert stored_status(data_file) == "rejected"
    assert tell(client, "approved", "2026-12-05T10:09:00+00:00", "msg_undo") == 204  # a newer verdict applies
    assert stored_status(data_file) == "approved"


def test_an_unsigned_callback_changes_nothing(site: tuple[FlaskClient, Path]) -> None:
    client, data_file = site
    body = json.dumps({"type": "comment.decided", "data": {"comment_id": "c-1", "status": "approved"}}).encode()
    assert client.post("/moderation-callback", data=body).status_code == 401
    assert stored_status(data_file) == "sending"


@contextlib.contextmanager
def site_posting_to_a_webhook(tmp_path: Path, answer: int) -> Iterator[tuple[FlaskClient, list[dict[str, Any]]]]:
    """The example site, posting to a webhook that records each event and answers with status ``answer``."""
    received: list[dict[str, Any]] = []

    class Webhook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(answer)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        secret_file = tmp_path / "secret"
        secret_file.write_text(SECRET)
        moderation_url = f"http://127.0.0.1:{server.server_port}"
        config = ExampleConfig("example-site", secret_file, moderation_url, tmp_path / "c.json", "http://site.test")
        yield create_app(config).test_client(), received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[FlaskClient, list[dict[str, Any]]]]:
    with site_posting_to_a_webhook(tmp_path, 202) as made:
        yield made


@pytest.mark.parametrize(("answer", "shown"), [(400, "refused by the moderation service"), (503, "could not reach")])
def test_a_comment_the_service_refuses_is_said_to_be_refused_not_unreached(
    tmp_path: Path, answer: int, shown: str
) -> None:
    """A body of invisible characters alone passes the form (it is not blank to a browser) and the service
    answers 400: the page said it "could not reach the moderation service", sending its author to look for a
    fault that was not there. A 503 (or no answer) is still that."""
    with site_posting_to_a_webhook(tmp_path, answer) as (client, received):
        assert client.post("/massage-therapy/comments", data={"body": "\u200b\u200b"}).status_code == 302
        assert len(received) == 1
        [mine] = client.get("/massage-therapy/comments.json").get_json()["mine"]
        assert shown in mine["status_text"]


@pytest.mark.parametrize(
    ("visitor", "sent"), [("127.0.0.1", ""), ("::1", ""), ("::ffff:127.0.0.1", ""), ("203.0.113.7", "203.0.113.7")]
)
def test_a_visitor_on_this_machine_is_sent_without_an_address(
    service: tuple[FlaskClient, list[dict[str, Any]]], visitor: str, sent: str
) -> None:
    """Tried out locally, every visitor is 127.0.0.1: sent, it would make them all one author to the service
    (one history, one flood limit), so a loopback address is left out; a real one is sent."""
    client, received = service
    posted = client.post(
        "/massage-therapy/comments",
        data={"name": "Jan", "email": "jan@example.org", "body": "Thanks, this helped."},
        environ_base={"REMOTE_ADDR": visitor},
    )
    assert posted.status_code == 302
    assert [event["data"]["author"]["ip"] for event in received] == [sent]


def test_a_comment_without_a_name_is_sent_without_one_and_shown_as_anonymous(
    service: tuple[FlaskClient, list[dict[str, Any]]],
) -> None:
    """The service's model reads the author's name: a placeholder sent for everyone who gave none moved their
    scores ("hi" was held as possible spam for it alone). The page names them; the webhook does not."""
    client, received = service
    assert client.post("/massage-therapy/comments", data={"name": "  ", "body": "hi"}).status_code == 302
    [event] = received
    assert "name" not in event["data"]["author"]
    CommentData.model_validate(event["data"])  # still a payload the service takes
    comment_id = event["data"]["comment_id"]
    data = {"comment_id": comment_id, "status": "approved", "reasons": [], "decided_at": "2026-12-05T10:00:00Z"}
    body = json.dumps({"type": "comment.decided", "data": data}).encode()
    assert client.post("/moderation-callback", data=body, headers=signed_headers(SECRET, body)).status_code == 204
    [published] = client.get("/massage-therapy/comments.json").get_json()["published"]
    assert (published["name"], published["body"]) == ("Anonymous", "hi")
    assert '<p class="who">Anonymous <time>' in client.get("/massage-therapy").get_data(as_text=True)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("", "Your comment is empty: write something before posting."),
        (" \r\n\t ", "Your comment is empty: write something before posting."),
        ("x" * 6000, "Your comment has 6,000 characters; the most is 5,000. Shorten it and post it again."),
    ],
)
def test_a_comment_the_form_would_not_take_is_not_posted_and_the_page_says_why(
    service: tuple[FlaskClient, list[dict[str, Any]]], body: str, problem: str
) -> None:
    """The form says 5,000 characters; a longer comment was posted all the same, and an empty one was dropped
    without a word. Either is refused on the page again, with what was typed still in the form."""
    client, received = service
    answer = client.post("/massage-therapy/comments", data={"name": "Jan", "email": "jan@example.org", "body": body})
    assert answer.status_code == 400
    page = answer.get_data(as_text=True)
    assert f'<p class="problem" id="comment-problem" role="alert">{problem}</p>' in page
    assert 'value="Jan"' in page and 'value="jan@example.org"' in page
    if body.strip():
        assert f">{body}</textarea>" in page  # to be shortened, not typed again
    assert received == []
    assert client.get("/massage-therapy/comments.json").get_json()["mine"] == []


def test_the_length_limit_counts_a_line_break_once_as_the_browser_does(
    service: tuple[FlaskClient, list[dict[str, Any]]],
) -> None:
    """A browser counts a line break as one character against maxlength and sends it as two (CRLF)."""
    client, received = service
    typed = "ok\n" * 1666 + "ok"  # 5,000 characters in the form
    answer = client.post("/massage-therapy/comments", data={"body": typed.replace("\n", "\r\n")})
    assert answer.status_code == 302
    assert [event["data"]["body"] for event in received] == [typed]


def test_the_article_page_names_its_icon_so_browsers_do_not_ask_for_a_missing_one(
    site: tuple[FlaskClient, Path],
) -> None:
    client, _ = site
    page = client.get("/massage-therapy").get_data(as_text=True)
    [icon] = re.findall(r'<link rel="icon" href="([^"]+)"', page)
    with client.get(icon) as answer:  # a file response: closed here, not by the garbage collector
        assert answer.status_code == 200 and answer.mimetype == "image/svg+xml"


def test_its_log_file_holds_plain_text_without_terminal_colours(tmp_path: Path) -> None:
    """`make run` writes the example site's lines to var/log/example-site.log, read with less or grep."""
    port = free_port()
    log_file = tmp_path / "example-site.log"
    env = {**os.environ, "VAR_DIR": str(tmp_path), "EXAMPLE_PORT": str(port)}
    with log_file.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "examples.site"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/no-such-page", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, log_file.read_text()
                time.sleep(0.1)
        assert answer.status_code == 404
    finally:
        process.terminate()
        process.wait(timeout=10)
    written = log_file.read_text()
    assert '"GET /no-such-page HTTP/1.1" 404' in written  # werkzeug paints a 404's line yellow on a terminal
    assert "development server" in written  # and its start-up warning red
    assert "\x1b[" not in written
