"""Standard Webhooks signatures, checked with the ``standardwebhooks`` library on the raw bytes, and the
memory of the ``webhook-id``s the pull API has seen.

An API request is signed over its body alone (empty for a GET): the signature covers neither the method nor
the path nor the query. Headers captured once would open any API URL of the site for as long as the
timestamp is within tolerance, so each API request must carry a ``webhook-id`` never used before.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets as random_secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import cast

import redis
from flask import request
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from moderation.keyed import keyed_digest
from moderation.sites import SITE_NAME_RE, SiteKeyCache, SiteKeys

log = logging.getLogger(__name__)

TIMESTAMP_RE = re.compile(r"^\d{1,12}$")
MAX_WEBHOOK_ID_LENGTH = 200
# C0 controls (NUL, tab, line breaks, escape), DEL and C1 controls: none belongs in an id. A NUL cannot be
# stored in PostgreSQL; a line break or an escape sequence would forge or garble the log lines the id is in.
CONTROL_CHARACTER_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
REQUIRED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")

# The library's: a timestamp verifies within this of the clock, either way. Checked here too, before the
# library, so that a sender whose clock is off is told which way rather than that its signature is wrong.
TIMESTAMP_TOLERANCE_SECONDS = 5 * 60
# A captured request verifies from its timestamp's tolerance start to its end: twice the tolerance after its
# first use at worst. The margin covers web hosts whose clocks disagree by a little.
USED_ID_SECONDS = 2 * TIMESTAMP_TOLERANCE_SECONDS + 60
USED_ID_PREFIX = "moderation:api-request-id"
LOCAL_USED_IDS = 100_000  # this process's own memory while Redis is unreachable, newest kept
REDIS_OPTIONS = {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}  # a hanging Redis must not hold a request
REDIS_RETRY_SECONDS = 5.0  # after Redis fails, only this process's memory is used for this long


class SignatureError(Exception):
    """The request is not signed by the site it names (or the signature is stale or malformed)."""


class TimestampOutOfToleranceError(SignatureError):
    """``webhook-timestamp`` is further from this server's clock than the tolerance: no signature was checked.

    The message is the same whenever it happens; the clock's reading is ``server_time``, for an answer to add.
    """

    def __init__(self, *, ahead: bool, server_time: int) -> None:
        too, side = ("new", "ahead of") if ahead else ("old", "behind")
        minutes = TIMESTAMP_TOLERANCE_SECONDS // 60
        super().__init__(
            f"webhook-timestamp is too {too}: more than {minutes} minutes {side} the server's clock; "
            "webhook-timestamp must be the current unix time in seconds"
        )
        self.server_time = server_time


def refusal_message(error: SignatureError, *, whose: str = "") -> str:
    """The 401's message for a request that is not signed, or is signed with a timestamp off the clock.

    A timestamp off the clock is refused before any signature is checked, so its answer does not blame the
    signature, and says what the clock reads: a sender can tell its own clock is wrong, and by how much.
    ``whose`` says whose signature was expected (" for the site named in the payload").
    """
    if isinstance(error, TimestampOutOfToleranceError):
        return f"{error}; the server's current unix time is {error.server_time}"
    return f"the signature does not verify{whose}: {error}"


def lower_headers() -> dict[str, str]:
    """The current request's headers keyed by lower-case name (Standard Webhooks names are lower-case)."""
    return {name.lower(): value for name, value in request.headers.items()}


def signature_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The three headers, checked for presence and shape before any cryptography."""
    found = {name: headers.get(name, "") for name in REQUIRED_HEADERS}
    missing = [name for name, value in found.items() if not value]
    if missing:
        raise SignatureError(f"missing header(s): {', '.join(missing)}")
    if len(found["webhook-id"]) > MAX_WEBHOOK_ID_LENGTH:
        raise SignatureError(f"webhook-id is longer than {MAX_WEBHOOK_ID_LENGTH} characters")
    if CONTROL_CHARACTER_RE.search(found["webhook-id"]):
        raise SignatureError("webhook-id must not hold control characters")  # the id itself is not repeated
    if not TIMESTAMP_RE.match(found["webhook-timestamp"]):
        raise SignatureError("webhook-timestamp must be integer unix seconds")
    if not any(part.startswith("v1,") for part in found["webhook-signature"].split(" ")):
        raise SignatureError("webhook-signature has no v1 signature")
    return found


def check_timestamp_tolerance(timestamp: str) -> None:
    """Raise TimestampOutOfToleranceError unless ``timestamp`` (integer unix seconds) is within the tolerance."""
    sent, now = int(timestamp), time.time()
    if sent < now - TIMESTAMP_TOLERANCE_SECONDS:
        raise TimestampOutOfToleranceError(ahead=False, server_time=int(now))
    if sent > now + TIMESTAMP_TOLERANCE_SECONDS:
        raise TimestampOutOfToleranceError(ahead=True, server_time=int(now))


def verify_signature(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> str:
    """Return the verified ``webhook-id``; raise SignatureError unless one of ``secrets`` signed ``body``.

    The timestamp must be within the tolerance of the clock; the library compares signatures in constant time.
    """
    try:
        body.decode("utf-8")  # Standard Webhooks sign text; some versions of the library also take raw bytes
    except UnicodeDecodeError:
        raise SignatureError("the body is not UTF-8 text") from None
    found = signature_headers(headers)
    check_timestamp_tolerance(found["webhook-timestamp"])
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


# A secret no site has, made once per process: a request naming a site that does not exist is checked
# against it, so that it fails exactly as a wrong signature for a real site does (which names exist is
# nobody's business but the sites').
_NO_SITE_SECRET = "whsec_" + base64.b64encode(random_secrets.token_bytes(32)).decode()


def refuse_unknown_site(body: bytes, headers: Mapping[str, str]) -> SignatureError:
    """The error a request for a site that does not exist gets: the one a wrong signature would get."""
    try:
        verify_signature(body, headers, [_NO_SITE_SECRET])
    except SignatureError as error:
        return error
    return SignatureError("No matching signature found")  # not reached: nobody holds the secret


def signed_by_site(
    sites: SiteKeyCache, session: Session, name: str, body: bytes, headers: Mapping[str, str]
) -> tuple[SiteKeys, str]:
    """The site named ``name`` and the request's verified ``webhook-id``, once one of the site's secrets has
    verified ``body``; else SignatureError (for a name no site has, the very one a wrong signature gets).

    The keys come from ``sites``; when they do not verify, they are read again (at most once per
    ``SiteKeyCache.REREAD_SECONDS`` for a name), so a secret made since the cached read verifies without
    letting every unsigned request cost a database read.
    """
    site = sites.get(session, name) if SITE_NAME_RE.fullmatch(name) else None
    if site is None:
        raise refuse_unknown_site(body, headers)
    try:
        return site, verify_signature(body, headers, site.usable_secrets(datetime.now(UTC)))
    except SignatureError:
        latest = sites.reread(session, name)
        if latest is None or latest.secrets == site.secrets:
            raise
    return latest, verify_signature(body, headers, latest.usable_secrets(datetime.now(UTC)))


class UsedRequestIds:
    """The ``webhook-id`` of each verified API request, per site, with the request it named, kept while a
    replay of it could verify.

    An id may be sent again with the same request (method, path, query and body): a retry after a timeout
    or a 503, or a site polling one status URL, as Standard Webhooks senders keep an id across retries. The
    same id on any other request is refused: headers captured once cannot open another URL.

    Kept in Redis (SET NX with a TTL), so every web process sees it; with Redis unreachable, in this
    process's memory for a few seconds at a time, as the rate limits do. An id remembered here keeps its
    request even once Redis answers again. The request is kept as ``request_fingerprint``, keyed with the app's
    SECRET_KEY (``secret_key``): Redis keeps it on disk, and an erasure request's body holds the author's e-mail.
    """

    def __init__(self, redis_url: str | None, secret_key: str | bytes) -> None:
        shared = redis_url is not None and redis_url.startswith(("redis://", "rediss://", "unix://"))
        self._redis = redis.Redis.from_url(redis_url, **REDIS_OPTIONS) if shared and redis_url else None
        self._redis_down_until = 0.0
        # key -> (monotonic expiry, the request's fingerprint), oldest first
        self._local: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()  # gunicorn's threads share this process's memory
        self._secret_key = secret_key

    def claim(self, site: str, webhook_id: str, method: str, full_path: str, body: bytes) -> bool:
        """True when ``webhook_id`` is new for ``site`` (now recorded) or was used for this same request."""
        # The key names the site and the id, both the site's own and neither personal: site names hold no ":".
        key = f"{USED_ID_PREFIX}:{site}:{webhook_id}"
        fingerprint = request_fingerprint(self._secret_key, method, full_path, body)
        known = self._known_here(key)
        if known is not None:
            return known == fingerprint
        if self._redis is not None and time.monotonic() >= self._redis_down_until:
            try:
                if self._redis.set(key, fingerprint, nx=True, ex=USED_ID_SECONDS):
                    return True
                stored = cast(bytes | None, self._redis.get(key))
                # Gone between the two calls (expired): the id is free again, as it would be a moment later.
                return stored is None or stored.decode() == fingerprint
            except (redis.RedisError, OSError):
                log.warning("Redis unreachable; remembering API request ids in this process for now", exc_info=True)
                self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
        return self._claim_here(key, fingerprint)

    def _known_here(self, key: str) -> str | None:
        with self._lock:
            self._forget_expired()
            entry = self._local.get(key)
            return entry[1] if entry is not None else None

    def _claim_here(self, key: str, fingerprint: str) -> bool:
        with self._lock:  # the check and the record as one step, as SET NX is in Redis
            self._forget_expired()
            entry = self._local.get(key)
            if entry is not None:
                return entry[1] == fingerprint
            self._local[key] = (time.monotonic() + USED_ID_SECONDS, fingerprint)
            while len(self._local) > LOCAL_USED_IDS:
                self._local.popitem(last=False)
            return True

    def _forget_expired(self) -> None:
        now = time.monotonic()
        while self._local and next(iter(self._local.values()))[0] <= now:
            self._local.popitem(last=False)  # every entry lives as long, so the oldest expire first


def request_fingerprint(secret_key: str | bytes, method: str, full_path: str, body: bytes) -> str:
    """What one API request asks for: the part a Standard Webhooks signature does not cover, and its body.

    Keyed with the app's SECRET_KEY, which every web process shares: a plain hash would let anyone holding
    Redis's file confirm a guessed erasure body, and so the author's e-mail in it."""
    return keyed_digest(secret_key, "api-request", f"{method} {full_path}\n".encode() + body).hex()
