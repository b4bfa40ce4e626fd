"""Standard Webhooks signatures, checked with the ``standardwebhooks`` library on the raw bytes."""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping, Sequence

from flask import request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

TIMESTAMP_RE = re.compile(r"^\d{1,12}$")
REQUIRED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class SignatureError(Exception):
    """The request is not signed by the site it names (or the signature is stale or malformed)."""


def lower_headers() -> dict[str, str]:
    """The current request's headers keyed by lower-case name (Standard Webhooks names are lower-case)."""
    return {name.lower(): value for name, value in request.headers.items()}


def signature_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The three headers, checked for presence and shape before any cryptography."""
    found = {name: headers.get(name, "") for name in REQUIRED_HEADERS}
    missing = [name for name, value in found.items() if not value]
    if missing:
        raise SignatureError(f"missing header(s): {', '.join(missing)}")
    if len(found["webhook-id"]) > 200:
        raise SignatureError("webhook-id is longer than 200 characters")
    if not TIMESTAMP_RE.match(found["webhook-timestamp"]):
        raise SignatureError("webhook-timestamp must be integer unix seconds")
    if not any(part.startswith("v1,") for part in found["webhook-signature"].split(" ")):
        raise SignatureError("webhook-signature has no v1 signature")
    return found


def verify_signature(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> str:
    """Return the verified ``webhook-id``; raise SignatureError unless one of ``secrets`` signed ``body``.

    The library compares in constant time and enforces the ±5 minute timestamp tolerance.
    """
    try:
        body.decode("utf-8")  # Standard Webhooks sign text; some versions of the library also take raw bytes
    except UnicodeDecodeError:
        raise SignatureError("the body is not UTF-8 text") from None
    found = signature_headers(headers)
    # Drop parts the library cannot split (it expects "version,signature" for each).
    found["webhook-signature"] = " ".join(p for p in found["webhook-signature"].split(" ") if p.count(",") == 1)
    last_error = "no secret"
    for secret in secrets:
        try:
            Webhook(secret).verify(body, found, json_parse=False)
            return found["webhook-id"]
        except WebhookVerificationError as error:
            last_error = str(error)
        except (ValueError, binascii.Error, UnicodeDecodeError) as error:
            last_error = f"malformed signature ({type(error).__name__})"
    raise SignatureError(last_error)
