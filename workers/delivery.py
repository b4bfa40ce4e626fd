"""The HTTP side of a callback: sign the payload as a Standard Webhook and POST it to the site."""

from __future__ import annotations

import importlib.metadata
import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx
from standardwebhooks.webhooks import Webhook

from moderation.sites import CallbackAddressRefusedError, callback_addresses


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
    if value.strip().isascii() and value.strip().isdigit():  # "²" is a digit to Python, not to float()
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    except (TypeError, ValueError, OverflowError):  # a site's header: anything may be in it
        return None


MAX_ANSWER_BYTES = 4096  # of a site's answer kept for the error text; reading stops past it
KEEPALIVE_SECONDS = 4.0  # an idle connection to a site is closed after this: before servers' usual 5 s

# When the POST under way must be over: httpx's timeouts bound each network operation, so a site that
# answers a byte at a time would otherwise hold a worker process for as long as it likes.
_deadline: ContextVar[float | None] = ContextVar("callback_deadline", default=None)
# The site's host name and the addresses checked for it: a new connection for the name goes to one of them,
# whatever the name resolves to by then. The URL keeps the name, so connections are pooled per name (never
# one site's TLS connection for another's name at the same address) and TLS checks the name's certificate.
_checked_addresses: ContextVar[tuple[str, tuple[str, ...]] | None] = ContextVar(
    "callback_checked_addresses", default=None
)


@contextmanager
def _whole_request_within(seconds: float) -> Iterator[None]:
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


@contextmanager
def _connecting_only_to(host: str, addresses: tuple[str, ...]) -> Iterator[None]:
    token = _checked_addresses.set((host, addresses))
    try:
        yield
    finally:
        _checked_addresses.reset(token)


def _addresses_checked_for(host: str) -> tuple[str, ...]:
    checked = _checked_addresses.get()
    if checked is None or checked[0] != host or not checked[1]:
        raise httpcore.ConnectError(f"no address was checked for {host}")
    return checked[1]


def _capped(timeout: float | None, late: type[httpcore.TimeoutException] = httpcore.ReadTimeout) -> float | None:
    """An operation's timeout, cut to what is left of the whole request's time (``late`` when none is)."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise late("the callback took longer than its timeout in all")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _capped(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _capped(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        try:
            left = _capped(timeout, httpcore.ConnectTimeout)
        except httpcore.ConnectTimeout:
            self._stream.close()  # no one else holds the socket yet
            raise
        # "example.com." is example.com's certificate (httpcore would check it against the dotted name)
        name = server_hostname.rstrip(".") if server_hostname else server_hostname
        return _DeadlineStream(self._stream.start_tls(ssl_context, name, left))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own sockets, to the addresses checked for the site's name only, every operation within the
    time left to the whole request."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """A connection to the first of the name's checked addresses that takes one, tried in order, as any
        client tries a name's addresses (an IPv6 one that does not answer, then the IPv4 one). Only a
        connection that could not be made moves on: nothing has been sent yet, so a callback never reaches
        the site twice. Each address gets at most an equal part of the time left, so one whose packets are
        dropped cannot use up the time of those after it."""
        addresses = _addresses_checked_for(host)
        options = None if socket_options is None else list(socket_options)  # used again for each address
        failures: list[tuple[str, httpcore.ConnectError | httpcore.ConnectTimeout]] = []
        for index, address in enumerate(addresses):
            try:
                left = _capped(timeout, httpcore.ConnectTimeout)
                share = None if left is None else left / (len(addresses) - index)
                return _DeadlineStream(self._backend.connect_tcp(address, port, share, local_address, options))
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failures.append((address, error))
        tried = ", ".join(f"{address} ({error})" for address, error in failures)
        where = tried if addresses == (host,) else f"{host} at {tried}"  # an address literal is named once
        raise type(failures[-1][1])(f"cannot connect to {where}")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("callbacks go to sites over TCP only")

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _user_agent() -> str:
    try:
        version = importlib.metadata.version("comment-moderation")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        version = "unknown"
    return f"comment-moderation/{version} (decision callbacks)"


# Who is calling, for the site's logs and firewall rules (httpx's own says only "python-httpx").
USER_AGENT = _user_agent()


def callback_client(max_connections: int = 20) -> httpx.Client:
    """The client for callbacks: no redirects followed, no proxy from the environment (the address checked
    is the one connected to), and every POST made through ``post_callback`` over within its timeout in all."""
    transport = httpx.HTTPTransport(limits=httpx.Limits(max_connections=max_connections), trust_env=False)
    # httpx has no setting for the network backend; its transport is httpcore's pool, built again with ours.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),  # SSL_CERT_FILE and SSL_CERT_DIR are honoured, as before
        max_connections=max_connections,
        keepalive_expiry=KEEPALIVE_SECONDS,
        network_backend=_DeadlineBackend(),
    )
    return httpx.Client(
        transport=transport, follow_redirects=False, trust_env=False, headers={"user-agent": USER_AGENT}
    )


def post_callback(
    client: httpx.Client,
    url: str,
    secrets: tuple[str, ...],
    message_id: str,
    payload: dict[str, Any],
    timeout: float,
) -> Attempt:
    """One signed POST, over within ``timeout`` seconds in all (with a ``callback_client``); a site's answer
    is read up to MAX_ANSWER_BYTES. A redirect is a failure like any answer outside 2xx: its Location is
    kept in the error, for the site's people to put right."""
    now = datetime.now(UTC)
    body = json.dumps(payload, separators=(",", ":"))
    headers = signed_headers(secrets, message_id, body, now)
    try:
        with _whole_request_within(timeout):
            target = httpx.URL(url)
            host = target.raw_host.decode("ascii")  # what a client would resolve: IDNA 2008, as httpx encodes it
            # Checked for every POST, a pooled connection or not: a name now pointing somewhere forbidden is refused.
            addresses = callback_addresses(host, timeout)
            request = client.build_request("POST", target, content=body.encode(), headers=headers, timeout=timeout)
            with _connecting_only_to(host, addresses):
                response = client.send(request, stream=True)
            try:
                answer = _first_bytes(response)  # read to its end when short: the connection is kept then
            except httpx.HTTPError:
                if not 200 <= response.status_code < 300:
                    raise
                answer = b""  # received all the same: a body that stalls after a 2xx only costs the connection
            finally:
                response.close()
    except CallbackAddressRefusedError as refused:
        return Attempt(False, None, f"refused: {refused}", None)
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as error:
        return Attempt(False, None, f"{type(error).__name__}: {error}", None)
    if 200 <= response.status_code < 300:
        return Attempt(True, response.status_code, "", None)
    location = response.headers.get("location")
    text = answer.decode("utf-8", errors="replace")[:500]  # whatever charset it claims: only shown
    return Attempt(
        False,
        response.status_code,
        f"HTTP {response.status_code}" + (f" to {location[:500]}" if location else "") + f": {text}",
        parse_retry_after(response.headers.get("retry-after"), now),
    )


def _first_bytes(response: httpx.Response) -> bytes:
    kept = b""
    for chunk in response.iter_raw():  # as sent: a compressed answer is not inflated
        kept += chunk
        if len(kept) >= MAX_ANSWER_BYTES:
            break
    return kept[:MAX_ANSWER_BYTES]
