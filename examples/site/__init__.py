"""A tiny article site that uses the moderation service the way a real one would.

Each comment typed into the form is signed with the site's secret and POSTed to the service's webhook;
the decision comes back as a signed callback to /moderation-callback, verified with the
``standardwebhooks`` library. Approved comments are published under the article; an author sees the
status of their own held or rejected comments, and nobody else does.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import threading
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from flask import Flask, Response, abort, jsonify, redirect, render_template, request, url_for
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

ARTICLE = {
    "id": "massage-therapy",
    "title": "Does Massage Therapy Really Help Back Pain?",
}
AUTHOR_COOKIE = "example_author"
STATUS_TEXT = {
    "sending": "sending to moderation…",
    "pending": "waiting for moderation…",
    "held": "held for a moderator to review",
    "approved": "published",
    "rejected": "not published",
    "not_sent": "could not reach the moderation service",
    "refused": "refused by the moderation service",
}
# Shown for a comment posted without a name, and never sent: the service's model reads the author's name, and
# a placeholder every nameless visitor shares would move their scores (it alone held "hi" as possible spam).
ANONYMOUS = "Anonymous"
MAX_BODY_CHARS = 5000  # the form's textarea maxlength; the service itself takes longer comments


@dataclass
class StoredComment:
    id: str
    name: str
    email: str
    body: str
    author_token: str
    created_at: str
    status: str = "sending"
    reasons: list[str] = field(default_factory=list)
    decided_at: str = ""  # of the decision applied: a late callback of an older one must not undo it


@dataclass
class ExampleConfig:
    site_name: str
    secret_file: Path
    moderation_url: str
    data_file: Path
    public_url: str

    @classmethod
    def from_environment(cls) -> ExampleConfig:
        var_dir = Path(os.environ.get("VAR_DIR", "var"))
        port = os.environ.get("EXAMPLE_PORT", "8001")
        return cls(
            site_name=os.environ.get("EXAMPLE_SITE_NAME", "example-site"),
            secret_file=Path(os.environ.get("EXAMPLE_SECRET_FILE", var_dir / "example-site.secret")),
            moderation_url=os.environ.get("MODERATION_URL", "http://127.0.0.1:8000").rstrip("/"),
            data_file=Path(os.environ.get("EXAMPLE_DATA_FILE", var_dir / "example-site-comments.json")),
            public_url=os.environ.get("EXAMPLE_PUBLIC_URL", f"http://127.0.0.1:{port}"),
        )

    def secret(self) -> str:
        return self.secret_file.read_text().strip()


class CommentStore:
    """The site's own comments, kept in a JSON file (a real site has a database)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.comments: dict[str, StoredComment] = {}
        if path.exists():
            for row in json.loads(path.read_text()):
                self.comments[row["id"]] = StoredComment(**row)

    def save(self, comment: StoredComment) -> None:
        with self.lock:
            self.comments[comment.id] = comment
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps([asdict(c) for c in self.comments.values()]))
            temporary.replace(self.path)

    def get(self, comment_id: str) -> StoredComment | None:
        with self.lock:
            return self.comments.get(comment_id)

    def all(self) -> list[StoredComment]:
        with self.lock:
            return sorted(self.comments.values(), key=lambda c: c.created_at)


def create_app(config: ExampleConfig | None = None) -> Flask:
    config = config or ExampleConfig.from_environment()
    app = Flask(__name__)
    store = CommentStore(config.data_file)
    app.extensions["example"] = (config, store)

    def author_token() -> str:
        return request.cookies.get(AUTHOR_COOKIE, "")

    def public(comment: StoredComment, token: str) -> dict[str, Any]:
        return {
            "id": comment.id,
            "name": comment.name or ANONYMOUS,
            "body": comment.body,
            "created_at": comment.created_at,
            "status": comment.status,
            "status_text": STATUS_TEXT.get(comment.status, comment.status),
            "mine": bool(token) and secrets.compare_digest(comment.author_token, token),
        }

    def visible(token: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rows = store.all()
        published = [public(c, token) for c in rows if c.status == "approved"]
        mine = [public(c, token) for c in rows if token and secrets.compare_digest(c.author_token, token)]
        return published, mine

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'"
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @app.get("/")
    def home() -> Response:
        return redirect(url_for("article"))  # type: ignore[return-value]

    def article_page(form: dict[str, str] | None = None, problem: str = "") -> str:
        published, mine = visible(author_token())
        return render_template(
            "article.html", article=ARTICLE, published=published, mine=mine, form=form or {}, problem=problem
        )

    @app.get("/massage-therapy")
    def article() -> Any:
        return article_page()

    @app.get("/massage-therapy/comments.json")
    def comments_json() -> Response:
        published, mine = visible(author_token())
        return jsonify(published=published, mine=mine)

    @app.post("/massage-therapy/comments")
    def post_comment() -> Any:
        body = submitted_body(request.form.get("body", ""))
        problem = body_problem(body)
        if problem:
            # The page again, with what was typed kept in the form: a redirect would lose it, and say nothing.
            return article_page(request.form.to_dict(), problem), 400
        token = author_token() or secrets.token_urlsafe(16)
        comment = StoredComment(
            id=f"c-{uuid.uuid4().hex[:12]}",
            name=request.form.get("name", "").strip()[:100],
            email=request.form.get("email", "").strip()[:200],
            body=body,
            author_token=token,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        store.save(comment)
        comment.status = send_to_moderation(config, comment, author_ip(request.remote_addr), request.user_agent.string)
        store.save(comment)
        response = redirect(url_for("article") + "#your-comments")
        response.set_cookie(AUTHOR_COOKIE, token, httponly=True, samesite="Lax", max_age=30 * 24 * 3600)
        return response

    @app.post("/moderation-callback")
    def moderation_callback() -> Any:
        raw = request.get_data()
        try:
            Webhook(config.secret()).verify(raw, {k.lower(): v for k, v in request.headers.items()})
        except (WebhookVerificationError, ValueError):
            abort(401)
        event = json.loads(raw)
        data = event.get("data", {})
        comment = store.get(str(data.get("comment_id", "")))
        decided_at = str(data.get("decided_at") or "")
        if comment is not None and data.get("status") in STATUS_TEXT and is_newer(decided_at, comment.decided_at):
            comment.status = data["status"]
            comment.reasons = list(data.get("reasons") or [])
            comment.decided_at = decided_at
            store.save(comment)
        return "", 204

    return app


def submitted_body(raw: str) -> str:
    """The comment as typed: a browser sends each line break of a textarea as CRLF but counts it as one
    character against maxlength, so a comment the form let through is never refused here for its length."""
    return raw.replace("\r\n", "\n").strip()


def body_problem(body: str) -> str:
    """Why the comment cannot be posted, for its author; empty when it can."""
    if not body:
        return "Your comment is empty: write something before posting."
    if len(body) > MAX_BODY_CHARS:
        return (
            f"Your comment has {len(body):,} characters; the most is {MAX_BODY_CHARS:,}. Shorten it and post it again."
        )
    return ""


def is_newer(decided_at: str, applied_at: str) -> bool:
    """Callbacks can arrive out of order (a retry of an older one landing late): the latest decision wins."""
    if not applied_at:
        return True
    try:
        return datetime.fromisoformat(decided_at) > datetime.fromisoformat(applied_at)
    except ValueError:
        return False


def author_ip(remote_addr: str | None) -> str:
    """The visitor's address to send, but never a loopback one: tried out on one machine, every visitor comes
    from 127.0.0.1, and the service would take them all for one author (one history, one flood limit)."""
    try:
        address = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return ""
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None  # ::ffff:127.0.0.1
    return "" if (mapped or address).is_loopback else str(address)


def author_sent(comment: StoredComment, ip: str, user_agent: str) -> dict[str, str]:
    """The webhook's author object: a comment posted without a name is sent without one (the schema's
    "no name"), as the service's model must read the name the author gave, not the page's placeholder."""
    author = {"email": comment.email, "url": "", "ip": ip, "user_agent": user_agent}
    return {"name": comment.name, **author} if comment.name else author


def send_to_moderation(config: ExampleConfig, comment: StoredComment, ip: str, user_agent: str) -> str:
    """Sign the comment with the site's secret and POST it to the webhook; the new status."""
    event = {
        "type": "comment.created",
        "data": {
            "comment_id": comment.id,
            "site": config.site_name,
            "article": {**ARTICLE, "url": f"{config.public_url}/massage-therapy"},
            "author": author_sent(comment, ip, user_agent),
            "body": comment.body,
            "parent_id": None,
            "created_at": comment.created_at.replace("+00:00", "Z"),
        },
    }
    payload = json.dumps(event)
    message_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(config.secret()).sign(message_id, now, payload),
    }
    try:
        answer = httpx.post(f"{config.moderation_url}/webhooks/comments", content=payload, headers=headers, timeout=10)
    except httpx.HTTPError:
        return "not_sent"
    if answer.status_code in (200, 202):
        return "pending"
    # A 4xx but 429 is the service's answer about the comment itself (a body of invisible characters alone,
    # which the form cannot tell from text): saying it was not reached would send the author looking for a fault.
    return "refused" if 400 <= answer.status_code < 500 and answer.status_code != 429 else "not_sent"
