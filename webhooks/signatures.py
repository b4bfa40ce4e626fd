"""Standard Webhooks signatures, checked with the ``standardwebhooks`` library on the raw bytes, and the
memory of the ``webhook-id``s the pull API has seen.

An API request is signed over its body alone (empty for a GET): the signature covers neither the method nor
the path nor the query. Headers captured once would open any API URL of the site for as long as the
timestamp is within tolerance, so each API request must carry a ``webhook-id`` never used before.
"""

from __future__ import annotations

import binascii
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import redis
from flask import request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

log = logging.getLogger(__name__)

TIMESTAMP_RE = re.compile(r"^\d{1,12}$")
REQUIRED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")

TIMESTAMP_TOLERANCE_SECONDS = 5 * 60  # the library's: a timestamp verifies within this of the clock, either way
# A captured request verifies from its timestamp's tolerance start to its end: twice the tolerance after its
# first use at worst. The margin covers web hosts whose clocks disagree by a little.
USED_ID_SECONDS = 2 * TIMESTAMP_TOLERANCE_SECONDS + 60
USED_ID_PREFIX = "moderation:api-request-id"
LOCAL_USED_IDS = 100_000  # this process's own memory while Redis is unreachable, newest kept
REDIS_OPTIONS = {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}  # a hanging Redis must not hold a request
REDIS_RETRY_SECONDS = 5.0  # after Redis fails, only this process's memory is used for this long


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


class UsedRequestIds:
    """The ``webhook-id`` of each verified API request, per site, kept while a replay of it could verify.

    Kept in Redis (SET NX with a TTL), so every web process refuses a replay; with Redis unreachable, in this
    process's memory for a few seconds at a time, as the rate limits do. An id remembered here is refused
    even once Redis answers again.
    """

    def __init__(self, redis_url: str | None) -> None:
        shared = redis_url is not None and redis_url.startswith(("redis://", "rediss://", "unix://"))
        self._redis = redis.Redis.from_url(redis_url, **REDIS_OPTIONS) if shared and redis_url else None
        self._redis_down_until = 0.0
        self._local: OrderedDict[str, float] = OrderedDict()  # key -> monotonic expiry, oldest first
        self._lock = threading.Lock()  # gunicorn's threads share this process's memory

    def first_use(self, site: str, webhook_id: str) -> bool:
        """Record ``webhook_id`` for ``site``: True the first time, False if it was used lately."""
        key = f"{USED_ID_PREFIX}:{site}:{webhook_id}"  # site names hold no ":"
        if self._used_here(key):
            return False
        if self._redis is not None and time.monotonic() >= self._redis_down_until:
            try:
                return bool(self._redis.set(key, 1, nx=True, ex=USED_ID_SECONDS))
            except (redis.RedisError, OSError):
                log.warning("Redis unreachable; remembering API request ids in this process for now", exc_info=True)
                self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
        return self._first_use_here(key)

    def _used_here(self, key: str) -> bool:
        with self._lock:
            self._forget_expired()
            return key in self._local

    def _first_use_here(self, key: str) -> bool:
        with self._lock:  # the check and the record as one step, as SET NX is in Redis
            self._forget_expired()
            if key in self._local:
                return False
            self._local[key] = time.monotonic() + USED_ID_SECONDS
            while len(self._local) > LOCAL_USED_IDS:
                self._local.popitem(last=False)
            return True

    def _forget_expired(self) -> None:
        now = time.monotonic()
        while self._local and next(iter(self._local.values())) <= now:
            self._local.popitem(last=False)  # every entry lives as long, so the oldest expire first
