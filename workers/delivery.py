"""The HTTP side of a callback: sign the payload as a Standard Webhook and POST it to the site."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from moderation.sites import CallbackAddressRefusedError, callback_address


@dataclass(frozen=True, slots=True)
class Attempt:
    ok: bool
    status_code: int | None
    error: str
    retry_after: float | None


def signed_headers(secrets: tuple[str, ...], message_id: str, body: str, now: datetime) -> dict[str, str]:
    """Standard Webhooks headers with one signature per secret, space-separated, in the order given.

    A tuple rather than any sequence: a lone ``str`` passed by mistake is then a type error, not a
    signature per character.
    """
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(Webhook(secret).sign(message_id, now, body) for secret in secrets),
    }


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds, from either of its forms (delta-seconds or an HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _pinned(target: httpx.URL, headers: dict[str, str], timeout: float) -> tuple[httpx.URL, dict[str, Any]]:
    """The URL to connect to: at the address checked for the site's host (a URL saved before the check
    existed, or a name that resolves somewhere forbidden now, is refused), with the name kept in the Host
    header and, for HTTPS, in TLS (SNI and the certificate check)."""
    host = target.raw_host.decode("ascii")  # what the client would resolve: IDNA 2008, as httpx encodes it
    address = callback_address(host, timeout)
    if address == host or f"[{address}]" == host:
        return target, {}
    headers["host"] = target.netloc.decode("ascii")
    return target.copy_with(host=address), {"sni_hostname": host} if target.scheme == "https" else {}


def post_callback(
    client: httpx.Client,
    url: str,
    secrets: tuple[str, ...],
    message_id: str,
    payload: dict[str, Any],
    timeout: float,
) -> Attempt:
    now = datetime.now(UTC)
    body = json.dumps(payload, separators=(",", ":"))
    headers = signed_headers(secrets, message_id, body, now)
    try:
        target = httpx.URL(url)
        connect_to, extensions = _pinned(target, headers, timeout)
        response = client.post(
            connect_to, content=body.encode(), headers=headers, timeout=timeout, extensions=extensions
        )
    except CallbackAddressRefusedError as refused:
        return Attempt(False, None, f"refused: {refused}", None)
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as error:
        return Attempt(False, None, f"{type(error).__name__}: {error}", None)
    if 200 <= response.status_code < 300:
        return Attempt(True, response.status_code, "", None)
    return Attempt(
        False,
        response.status_code,
        f"HTTP {response.status_code}: {response.text[:500]}",
        parse_retry_after(response.headers.get("retry-after"), now),
    )
