"""Two independent ways to sign a Standard Webhooks request: the library, and the spec done by hand."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

# How the answer to a timestamp off the server's clock ends: the clock's reading, which changes every second.
SERVER_TIME_RE = re.compile(r"; the server's current unix time is (\d+)$")


def without_server_time(message: str) -> tuple[str, int | None]:
    """The message without the server's clock reading at its end, and the reading (None when it gives none)."""
    found = SERVER_TIME_RE.search(message)
    return (message[: found.start()], int(found.group(1))) if found else (message, None)


def sign_with_library(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    return str(Webhook(secret).sign(message_id, datetime.fromtimestamp(timestamp, UTC), body.decode()))


def sign_from_spec(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """From the spec text: HMAC-SHA256 over "id.timestamp.body" keyed with the base64 part of the secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secret: str,
    body: bytes,
    *,
    message_id: str | None = None,
    timestamp: int | None = None,
    signer: Any = sign_with_library,
) -> dict[str, str]:
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(datetime.now(UTC).timestamp()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signer(secret, message_id, timestamp, body),
    }


def comment_event(
    site: str, comment_id: str, body: str = "Massage helped me a lot, but only with stretching too.", **data: Any
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "comment.created",
        "data": {
            "comment_id": comment_id,
            "site": site,
            "article": {
                "id": "massage-therapy",
                "url": "https://example.org/massage-therapy.html",
                "title": "Does Massage Therapy Really Help Back Pain?",
            },
            "author": {
                "name": "Jan",
                "email": "jan@example.org",
                "url": "",
                "ip": "203.0.113.9",
                "user_agent": "Mozilla/5.0",
            },
            "body": body,
            "parent_id": None,
            "created_at": "2026-11-26T10:00:00Z",
        },
    }
    event["data"].update(data)
    return event


def encode(event: Any) -> bytes:
    return json.dumps(event).encode()
