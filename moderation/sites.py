"""Sites and their webhook secrets (Standard Webhooks ``whsec_`` secrets, rotated with an overlap)."""

from __future__ import annotations

import base64
import ipaddress
import math
import re
import secrets
import socket
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from models.db import flush_unless_taken
from models.entities import Site, SiteSecret, usable_secrets

SITE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
MAX_SITE_NAME_CHARS = 100  # sites.name, as SITE_NAME_RE allows
MAX_CALLBACK_URL_CHARS = 2000  # sites.callback_url
SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix


class SiteError(ValueError):
    """A site request that cannot be carried out (bad name, unknown or duplicate site)."""


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def get_site(session: Session, name: str) -> Site | None:
    """The site with its secrets, in one round trip (intake verifies with them on every webhook)."""
    found = session.execute(select(Site).options(joinedload(Site.secrets)).where(Site.name == name))
    return found.unique().scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class SecretKey:
    id: int
    secret: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class SiteKeys:
    """What intake needs of a site to verify a webhook: its id, its name and its secrets with their expiry."""

    id: int
    name: str
    secrets: tuple[SecretKey, ...]

    @classmethod
    def of(cls, site: Site) -> SiteKeys:
        return cls(site.id, site.name, tuple(SecretKey(s.id, s.secret, s.expires_at) for s in site.secrets))

    def usable_secrets(self, now: datetime) -> list[str]:
        return usable_secrets(self.secrets, now)


@dataclass(slots=True)
class _Entry:
    read_at: float  # monotonic time the read that found these keys began
    keys: SiteKeys
    # When a reread of them last began: it spares others a read for REREAD_SECONDS, but the keys are no newer.
    reread_from: float = -math.inf


class SiteKeyCache:
    """Sites' keys held in the web process for ``ttl`` seconds: a signed request is verified without a
    database read, and a refused one costs none either, whoever sends it.

    Expiry dates are checked on every request, so a rotation's overlap ends on time. What a cached entry
    can miss for up to ``ttl`` seconds is a change made since it was read: a secret retired at once
    (rotation without overlap) or a deleted site.

    A new secret is missed for at most ``REREAD_SECONDS``: when the cached secrets do not verify a
    request, the caller asks ``reread``, which reads the site again unless it was read less than
    ``REREAD_SECONDS`` ago (then the keys that read found are the answer). In the worst case a site that
    signs with its new secret within ``REREAD_SECONDS`` of the rotation, just after something else had its
    keys read again, gets one 401; its retry, sent later than that, is accepted.

    A name no site has is remembered as absent for ``ttl`` seconds, so a site added since (``moderation
    sites add`` in another process) is found once ``ttl`` has passed; a name never asked for is looked up
    at once. That memory holds ``MAX_UNKNOWN_NAMES`` names: more unknown names than that within ``ttl``
    is a stranger making names up, and while it lasts every site's name is read (at most once per
    ``ttl``) and answers for names not cached, so a new name each time reads nothing more either.

    ``ttl`` 0 reads the site on every request (and a new site is found at once); a refused request still
    reads it only that once. Thread-safe: gunicorn's threads share one cache.
    """

    MAX_SITES = 1000  # names are only cached once found, so strangers cannot grow this
    # Senders retry a refused delivery after seconds (Standard Webhooks' schedule starts at 5 s), so a
    # site refused once after a rotation is accepted on its first retry; an attacker sending bad
    # signatures for a site's name costs one read a second per process.
    REREAD_SECONDS = 1.0
    # A site sending for a name not registered yet, a typo: a few. Past this many within ttl, unknown names
    # cost one read per ttl in all (the names of every site), whoever makes them up.
    MAX_UNKNOWN_NAMES = 100

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._entries: dict[str, _Entry] = {}
        self._absent: OrderedDict[str, float] = OrderedDict()  # name -> when it was found absent, oldest first
        self._names: frozenset[str] = frozenset()  # every site's name, as read at _names_read_at
        self._names_read_at = -math.inf
        self._lock = threading.Lock()

    def get(self, session: Session, name: str) -> SiteKeys | None:
        """The site's keys: cached ones younger than ``ttl``, else read (None for a name no site has)."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and now - entry.read_at < self._ttl:
                return entry.keys
            if entry is None and self._known_absent(name, now):
                return None
            flooded = entry is None and len(self._absent) >= self.MAX_UNKNOWN_NAMES
            names = self._names if now - self._names_read_at < self._ttl else None
        if flooded and name not in (names if names is not None else self._read_names(session, now)):
            return None
        return self._read(session, name, now)

    def reread(self, session: Session, name: str) -> SiteKeys | None:
        """The site's keys read again because the ones ``get`` gave did not verify a request, unless they
        were read less than ``REREAD_SECONDS`` ago: then those (as new as any this process has)."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and now - max(entry.read_at, entry.reread_from) < self.REREAD_SECONDS:
                return entry.keys
            if entry is not None:  # threads refused while this read runs take the keys held, not a read each
                entry.reread_from = now
        return self._read(session, name, now)

    def _known_absent(self, name: str, now: float) -> bool:
        while self._absent and now - next(iter(self._absent.values())) >= self._ttl:
            self._absent.popitem(last=False)
        found_absent_at = self._absent.get(name)
        return found_absent_at is not None and now - found_absent_at < self._ttl

    def _read_names(self, session: Session, now: float) -> frozenset[str]:
        names = frozenset(session.scalars(select(Site.name)))
        with self._lock:
            if now >= self._names_read_at:
                self._names, self._names_read_at = names, now
        return names

    def _read(self, session: Session, name: str, now: float) -> SiteKeys | None:
        site = get_site(session, name)
        keys = SiteKeys.of(site) if site is not None else None
        with self._lock:
            current = self._entries.get(name)
            if current is not None and current.read_at > now:
                return current.keys  # a later read has been kept meanwhile: it is the newer
            if keys is None:
                self._remember_absent(name, now)
            else:
                self._absent.pop(name, None)
                if len(self._entries) >= self.MAX_SITES and name not in self._entries:
                    self._entries.clear()
                self._entries[name] = _Entry(now, keys)
        return keys

    def _remember_absent(self, name: str, now: float) -> None:
        self._entries.pop(name, None)
        self._names -= {name}  # deleted since the names were read: not read again on every request
        if self._ttl > 0 and (name in self._absent or len(self._absent) < self.MAX_UNKNOWN_NAMES):
            self._absent[name] = now
            self._absent.move_to_end(name)


def require_site(session: Session, name: str) -> Site:
    site = get_site(session, name)
    if site is None:
        raise SiteError(f"no site named {name!r}")
    return site


def shown_callback_url(url: str) -> str:
    """The URL to print or log: credentials in it starred out (``user:***@``; a user name alone, usually a
    token, as ``***@``). Never raises, whatever the text.

    The authority ends at the first ``/``, ``?`` or ``#`` (an ``@`` in the query is not a credential's end).
    Not for database URLs, whose passwords may hold an unescaped ``/`` (``server.settings.redacted_url``).
    """
    scheme, sep, rest = url.partition("://")
    ends = [i for i in (rest.find(mark) for mark in "/?#") if i >= 0]
    authority, tail = rest[: min(ends, default=len(rest))], rest[min(ends, default=len(rest)) :]
    userinfo, at, host = authority.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _secret = userinfo.partition(":")
    return f"{scheme}://{user + ':***' if colon else '***'}@{host}{tail}"


def validate_callback_url(url: str | None) -> str | None:
    """An http(s) URL that the callback client can actually send to, or None."""
    url = (url or "").strip()
    if not url:
        return None
    if len(url) > MAX_CALLBACK_URL_CHARS:  # said without quoting it: the dashboard shows the error in its page
        raise SiteError(f"callback URL must have at most {MAX_CALLBACK_URL_CHARS} characters, got {len(url)}")
    invalid = SiteError(f"callback URL must be an absolute http(s) URL, got {shown_callback_url(url)!r}")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise invalid
    try:
        parsed = httpx.URL(url)
        host = parsed.host  # decodes an xn-- name, which fails for one no IDNA encoder could have made
    except (httpx.InvalidURL, ValueError):  # idna's errors are ValueErrors too
        raise invalid from None
    if parsed.scheme not in ("http", "https") or not host:
        raise invalid
    if forbidden_callback_host(host):
        raise SiteError(
            "callback URL must not point at a link-local, unspecified or cloud metadata address, got "
            f"{shown_callback_url(url)!r}"
        )
    return url


METADATA_HOSTS = ("metadata.google.internal", "metadata")
# Metadata services outside link-local space: AWS's IPv6 one (a private address), Alibaba Cloud's, Azure's
# WireServer and Oracle Cloud's.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address) for address in ("fd00:ec2::254", "100.100.100.200", "168.63.129.16", "192.0.0.192")
)


def forbidden_callback_host(host: str) -> bool:
    """Whether ``host``, as written, names a cloud instance metadata service or "any address".

    Addresses count in every spelling a resolver accepts (``2852039166``, ``0xa9fea9fe``, ``169.254.43518``,
    ``[::ffff:169.254.169.254]``). A name is checked when a worker resolves it (``callback_addresses``);
    saving a URL does not depend on DNS. Private and loopback addresses stay allowed: a site on the same
    host or network is a normal setup.
    """
    if host.lower().rstrip(".") in METADATA_HOSTS:
        return True
    literal = _literal_address(host)
    return literal is not None and _forbidden_address(literal)


class CallbackAddressRefusedError(Exception):
    """The callback's host is, or resolves to, an address a signed POST must never go to."""


def callback_addresses(host: str, timeout: float | None = None) -> tuple[str, ...]:
    """The addresses to connect to for ``host`` (ASCII, as the HTTP client sends it), checked, in the order
    the resolver gives them (one for an address literal).

    A name is resolved once here and the POST goes to one of these addresses (the caller keeps the name for
    the Host header and TLS), so a name that answers differently the next time (DNS rebinding) cannot slip
    past. Every address the name has must be allowed; a name that does not resolve, or not within
    ``timeout`` seconds, is refused (the attempt is retried later anyway).
    """
    if forbidden_callback_host(host):
        raise CallbackAddressRefusedError(f"{host} is a link-local, unspecified or cloud metadata address")
    literal = _literal_address(host)
    if literal is not None:
        return (str(literal),)
    addresses = [ipaddress.ip_address(found.split("%")[0]) for found in _resolve(host, timeout)]
    if not addresses or any(_forbidden_address(address) for address in addresses):
        raise CallbackAddressRefusedError(f"{host} resolves to a link-local, unspecified or cloud metadata address")
    return tuple(dict.fromkeys(str(address) for address in addresses))  # each once (a hosts file may list one twice)


# Name lookups still running, by host. A caller gives up on a lookup after its timeout but the system
# resolver cannot be interrupted (it may take 30 s or more), so each lookup runs in a thread of its own; a
# host already being looked up is waited for, not looked up again, so that a site whose name server hangs
# holds one thread, however often its callbacks are retried, and never the lookups of other sites.
MAX_LOOKUPS_RUNNING = 64
_running: dict[str, Future[list[str]]] = {}
_running_lock = threading.Lock()


def _resolve(host: str, timeout: float | None) -> list[str]:
    """The addresses ``host`` resolves to, waiting at most ``timeout`` seconds for them."""
    lookup = _lookup_of(host)
    try:
        return lookup.result(timeout=timeout)
    except FutureTimeoutError:
        raise CallbackAddressRefusedError(f"cannot resolve {host}: no answer within {timeout:g} s") from None
    except (OSError, UnicodeError) as error:
        raise CallbackAddressRefusedError(f"cannot resolve {host}: {error}") from None


def _lookup_of(host: str) -> Future[list[str]]:
    with _running_lock:
        lookup = _running.get(host)
        if lookup is not None:
            return lookup
        if len(_running) >= MAX_LOOKUPS_RUNNING:
            raise CallbackAddressRefusedError(f"cannot resolve {host}: {len(_running)} name lookups still running")
        lookup = _running[host] = Future()
    threading.Thread(target=_look_up, args=(host, lookup), name="callback-dns", daemon=True).start()
    return lookup


def _look_up(host: str, lookup: Future[list[str]]) -> None:
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        lookup.set_result([str(entry[4][0]) for entry in found])
    except BaseException as error:  # handed to the caller, whatever it is
        lookup.set_exception(error)
    finally:
        with _running_lock:
            _running.pop(host, None)


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    bare = host.strip("[]").removesuffix(".")  # "169.254.169.254." resolves as the address itself
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    try:  # the old forms inet_aton reads, as the resolver behind the HTTP client does
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except (OSError, UnicodeError, ValueError):
        return None


# IPv6 prefixes that carry an IPv4 address in their last 32 bits: IPv4-compatible (::a.b.c.d), NAT64
# (64:ff9b::/96) and IPv4-translated (::ffff:0:a.b.c.d).
EMBEDDED_IPV4 = (
    ipaddress.ip_network("::/96"),
    ipaddress.ip_network("64:ff9b::/96"),
    ipaddress.ip_network("::ffff:0:0:0/96"),
)


def _forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif any(address in network for network in EMBEDDED_IPV4) and int(address) > 1:  # not :: or ::1
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.is_link_local or address.is_unspecified or address in METADATA_ADDRESSES


def create_site(session: Session, name: str, callback_url: str | None = None) -> tuple[Site, str]:
    """A new site and its first secret (returned once; only its holder and the database know it)."""
    if not SITE_NAME_RE.fullmatch(name):
        raise SiteError("site name must be 1-100 lower-case letters, digits, '.', '_' or '-'")
    if get_site(session, name) is not None:
        raise SiteError(f"a site named {name!r} already exists")
    secret = generate_secret()
    site = Site(name=name, callback_url=validate_callback_url(callback_url))
    site.secrets.append(SiteSecret(secret=secret))
    session.add(site)
    # Added by another admin (or `moderation sites add`) since the check.
    flush_unless_taken(session, SiteError(f"a site named {name!r} already exists"))
    return site, secret


def rotate_secret(session: Session, site: Site, overlap: timedelta, now: datetime | None = None) -> str:
    """Add a new secret; the ones in use keep verifying for ``overlap`` so the site can switch over."""
    now = now or datetime.now(UTC)
    for old in site.secrets:
        if old.expires_at is None or old.expires_at > now + overlap:
            old.expires_at = now + overlap
    secret = generate_secret()
    site.secrets.append(SiteSecret(secret=secret, created_at=now))
    session.flush()
    return secret


def signing_secrets(site: Site, now: datetime | None = None) -> tuple[str, ...]:
    """The secrets outgoing callbacks are signed with, newest first: each one intake still accepts.

    During a rotation's overlap the site may hold only the old secret or already only the new one; a
    callback signed with both (space-separated signatures) verifies with either. Once the overlap ends,
    only the newest signs.
    """
    usable = site.usable_secrets(now or datetime.now(UTC))
    if not usable:
        raise SiteError(f"site {site.name!r} has no usable secret: rotate one")
    return tuple(usable)
