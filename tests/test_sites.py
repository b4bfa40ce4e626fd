"""Sites and their secrets: validation on creation, rotation with an overlap, the newest secret signs."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from models.entities import Site, SiteSecret
from moderation import sites
from moderation.sites import (
    SiteError,
    SiteKeyCache,
    SiteKeys,
    create_site,
    require_site,
    rotate_secret,
    shown_callback_url,
    signing_secrets,
)
from tests.support.signing import encode, sign_from_spec, signed_headers
from tests.support.site_reads import frozen_cache_clock, site_reads
from webhooks.signatures import SignatureError, signed_by_site, verify_signature

BODY = encode({"type": "comment.created", "data": {"comment_id": "c-1"}})


def verifies(body_secret: str, usable: list[str]) -> bool:
    try:
        verify_signature(BODY, signed_headers(body_secret, BODY), usable)
    except SignatureError:
        return False
    return True


@pytest.mark.parametrize(
    "name",
    ["", "Backpain", "-leading-dash", "_under", "has space", "slash/name", "ünicode", "a" * 101, "two\nlines"],
    ids=["empty", "upper", "dash", "underscore", "space", "slash", "unicode", "too-long", "inner-newline"],
)
def test_bad_site_names_are_refused(sessions: sessionmaker[Session], name: str) -> None:
    with sessions.begin() as session:
        with pytest.raises(SiteError):
            create_site(session, name)
        assert session.scalars(select(Site)).all() == []


def test_a_name_with_a_trailing_newline_is_refused(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        create_site(session, "backpain-advisor")
        with pytest.raises(SiteError):
            create_site(session, "backpain-advisor\n")


@pytest.mark.parametrize("name", ["a", "backpain-advisor", "site.example.org", "x_1", "9lives", "a" * 100])
def test_good_site_names_are_accepted(sessions: sessionmaker[Session], name: str) -> None:
    with sessions.begin() as session:
        create_site(session, name)
    with sessions() as session:
        assert require_site(session, name).name == name


@pytest.mark.parametrize(
    "url",
    [
        "ftp://site.example/cb",
        "site.example/cb",
        "javascript:alert(1)",
        "http://",
        "https:// spaced",
        "https://x/" * 201,
    ],
    ids=["ftp", "no-scheme", "javascript", "no-host", "space", "too-long"],
)
def test_bad_callback_urls_are_refused(sessions: sessionmaker[Session], url: str) -> None:
    with sessions.begin() as session, pytest.raises(SiteError, match="callback URL"):
        create_site(session, "backpain-advisor", url)


@pytest.mark.parametrize(
    "url",
    ["http://[::1/cb", "https://site.example/a\tb", "ftp://site.example/cb", "/relative", "http://xn--a.example/"],
    ids=["ipv6", "tab", "ftp", "relative", "bad-punycode"],
)
def test_callback_urls_that_cannot_be_sent_are_refused(sessions: sessionmaker[Session], url: str) -> None:
    with sessions.begin() as session, pytest.raises(SiteError, match="callback URL"):
        create_site(session, "backpain-advisor", url)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/cb",
        "http://0.0.0.0:8001/cb",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://2852039166/",
        "http://0xa9fea9fe/",
        "http://169.254.43518/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://0/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://168.63.129.16/machine",
        "http://192.0.0.192/opc/v2/instance/",
        "http://169.254.169.254./latest/meta-data",
    ],
    ids=[
        "aws-metadata",
        "ipv6-link-local",
        "unspecified",
        "gcp-metadata",
        "decimal",
        "hex",
        "short-form",
        "ipv4-mapped",
        "ipv4-mapped-hex",
        "zero",
        "aws-ipv6",
        "alibaba",
        "azure-wireserver",
        "oracle",
        "trailing-dot",
    ],
)
def test_callback_urls_at_metadata_addresses_are_refused(sessions: sessionmaker[Session], url: str) -> None:
    """A signed POST to the cloud metadata service from an admin's typo or a stolen admin session: refused,
    in every spelling the resolver behind the HTTP client reads as that address."""
    with sessions.begin() as session, pytest.raises(SiteError, match="link-local"):
        create_site(session, "backpain-advisor", url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8001/cb", "http://10.0.0.5/cb", "http://[::1]:8001/cb"])
def test_callback_urls_on_the_same_host_or_network_are_allowed(sessions: sessionmaker[Session], url: str) -> None:
    with sessions.begin() as session:
        site, _ = create_site(session, "backpain-advisor", url)
        assert site.callback_url == url


def test_a_pasted_trailing_newline_is_stripped_not_stored(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        site, _ = create_site(session, "backpain-advisor", "https://site.example/cb\n")
        assert site.callback_url == "https://site.example/cb"


def test_callback_url_is_stored_and_empty_means_none(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        create_site(session, "with-url", "https://site.example/moderation?key=1")
        create_site(session, "empty-url", "")
    with sessions() as session:
        assert require_site(session, "with-url").callback_url == "https://site.example/moderation?key=1"
        assert require_site(session, "empty-url").callback_url is None


def test_duplicate_and_unknown_sites(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        create_site(session, "backpain-advisor")
    with sessions.begin() as session, pytest.raises(SiteError, match="already exists"):
        create_site(session, "backpain-advisor")
    with sessions() as session, pytest.raises(SiteError, match="no site"):
        require_site(session, "nobody")


def test_a_site_added_meanwhile_is_refused_as_the_check_refuses_it(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two admins adding one name at once: the second's check passes before the first commits, and the unique
    index refuses the row. That was the database's IntegrityError (its statement shown on the Sites page); it is
    the SiteError the check gives, so the dashboard and the command say it as they say any other."""
    with sessions.begin() as session:
        create_site(session, "backpain-advisor")
    monkeypatch.setattr(sites, "get_site", lambda session, name: None)  # the first add not committed yet
    with sessions() as session, pytest.raises(SiteError) as refused:
        create_site(session, "backpain-advisor", "https://site.example/cb")
    assert str(refused.value) == "a site named 'backpain-advisor' already exists"
    with sessions() as session:
        assert session.scalars(select(Site.name)).all() == ["backpain-advisor"]


def test_a_callback_url_too_long_to_store_is_refused_without_quoting_it(sessions: sessionmaker[Session]) -> None:
    """The error quoted the whole URL, however long: the Sites page shows the error in the page."""
    url = "https://site.example/" + "a" * 5000
    with sessions.begin() as session, pytest.raises(SiteError) as refused:
        create_site(session, "backpain-advisor", url)
    assert str(refused.value) == f"callback URL must have at most 2000 characters, got {len(url)}"


def test_a_new_site_gets_one_strong_standard_webhooks_secret(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        _, first = create_site(session, "one")
        _, second = create_site(session, "two")
    assert first != second
    for secret in (first, second):
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    with sessions() as session:
        site = require_site(session, "one")
        assert site.usable_secrets(datetime.now(UTC)) == [first]
        assert signing_secrets(site) == (first,)
    assert verifies(first, [first]) and not verifies(second, [first])


def test_rotation_keeps_both_secrets_during_the_overlap_then_only_the_new(sessions: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    with sessions.begin() as session:
        _, old = create_site(session, "backpain-advisor")
    with sessions.begin() as session:
        new = rotate_secret(session, require_site(session, "backpain-advisor"), timedelta(hours=24), now)
    assert new != old

    with sessions() as session:  # a fresh read: the expiry is stored, not only held in memory
        site = require_site(session, "backpain-advisor")
        during = site.usable_secrets(now + timedelta(hours=23))
        after = site.usable_secrets(now + timedelta(hours=24, seconds=1))
        # Callbacks are signed with every secret intake still accepts, newest first: a site holding
        # either one verifies them during the overlap.
        assert signing_secrets(site, now + timedelta(hours=1)) == (new, old)
        assert signing_secrets(site, now + timedelta(days=2)) == (new,)

    assert during == [new, old]
    assert verifies(old, during) and verifies(new, during)
    assert after == [new]
    assert verifies(new, after) and not verifies(old, after)


def test_a_request_carrying_signatures_from_both_secrets_verifies(sessions: sessionmaker[Session]) -> None:
    """A site mid-switch may sign with both secrets (space-separated signatures, per the spec)."""
    now = datetime.now(UTC)
    with sessions.begin() as session:
        _, old = create_site(session, "backpain-advisor")
        new = rotate_secret(session, require_site(session, "backpain-advisor"), timedelta(hours=1), now)
    timestamp = int(now.timestamp())
    headers = signed_headers(old, BODY, message_id="msg_1", timestamp=timestamp)
    headers["webhook-signature"] += " " + sign_from_spec(new, "msg_1", timestamp, BODY)
    assert verify_signature(BODY, headers, [new]) == "msg_1"
    assert verify_signature(BODY, headers, [old]) == "msg_1"


def test_a_second_rotation_never_extends_an_older_secret(sessions: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    with sessions.begin() as session:
        _, first = create_site(session, "backpain-advisor")
        site = require_site(session, "backpain-advisor")
        second = rotate_secret(session, site, timedelta(hours=1), now)
        third = rotate_secret(session, site, timedelta(hours=1), now + timedelta(minutes=30))
    with sessions() as session:
        site = require_site(session, "backpain-advisor")
        assert site.usable_secrets(now + timedelta(minutes=45)) == [third, second, first]
        assert site.usable_secrets(now + timedelta(minutes=61)) == [third, second]
        assert site.usable_secrets(now + timedelta(minutes=91)) == [third]
        assert len(session.scalars(select(SiteSecret)).all()) == 3


def test_rotation_without_overlap_retires_the_old_secret_at_once(sessions: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    with sessions.begin() as session:
        _, old = create_site(session, "backpain-advisor")
        new = rotate_secret(session, require_site(session, "backpain-advisor"), timedelta(0), now)
    with sessions() as session:
        site = require_site(session, "backpain-advisor")
        assert site.usable_secrets(now) == [new]
        assert not verifies(old, site.usable_secrets(now))
        assert signing_secrets(site, now) == (new,)  # a leaked secret signs no callback either


def test_signing_secrets_needs_a_usable_secret(sessions: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    with sessions.begin() as session:
        site, _ = create_site(session, "backpain-advisor")
        for secret in site.secrets:
            secret.expires_at = now
    with sessions() as session, pytest.raises(SiteError, match="no usable secret"):
        signing_secrets(require_site(session, "backpain-advisor"), now)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://cb:s3cret@site.example/cb?a=b@c", "https://cb:***@site.example/cb?a=b@c"),
        ("https://tok3n@site.example/cb", "https://***@site.example/cb"),  # a user name alone: usually a token
        ("https://site.example/cb?a=b:x@c", "https://site.example/cb?a=b:x@c"),  # an @ in the query is no credential
        ("https://u:p\u2100w@h.example/cb", "https://u:***@h.example/cb"),  # urllib's urlsplit raises on this one
        ("https://[::1]:8080/cb", "https://[::1]:8080/cb"),
        ("not a url at all", "not a url at all"),
    ],
)
def test_a_callback_url_is_shown_with_its_credentials_starred(url: str, shown: str) -> None:
    assert shown_callback_url(url) == shown


@pytest.mark.parametrize(
    "url", ["ftp://cb:s3cret@site.example/cb", "http://cb:s3cret@169.254.169.254/", "https://cb:s3cret@\x00"]
)
def test_a_refused_callback_url_is_not_echoed_with_its_password(sessions: sessionmaker[Session], url: str) -> None:
    with sessions.begin() as session, pytest.raises(SiteError) as refused:
        create_site(session, "leaky-site", url)
    assert "s3cret" not in str(refused.value) and "cb:***@" in str(refused.value)


def test_threads_refused_at_the_same_moment_read_the_site_once(
    sessions: sessionmaker[Session], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn's threads share one cache: a burst of bad signatures for one site, and of unknown names, read
    the site once between them, and each thread gets the site's keys or None, never an error."""
    clock = frozen_cache_clock(monkeypatch)
    monkeypatch.setattr(SiteKeyCache, "MAX_UNKNOWN_NAMES", 1)
    with sessions.begin() as session:
        create_site(session, "backpain-advisor")
    cache = SiteKeyCache(ttl=5)
    with sessions() as session:
        keys = cache.get(session, "backpain-advisor")
        # One unknown name fills the memory; the next has every site's name read: names are being made up.
        assert cache.get(session, "nobody-1") is None and cache.get(session, "nobody-2") is None
    assert keys is not None
    clock.advance(SiteKeyCache.REREAD_SECONDS)
    threads = 8
    together = threading.Barrier(threads)

    def refused_requests(thread: int) -> list[SiteKeys | None]:
        with sessions() as session:
            together.wait()
            found = [cache.reread(session, "backpain-advisor") for _ in range(25)]
            return found + [cache.get(session, f"stranger-{thread}-{n}") for n in range(25)]

    with site_reads(engine) as reads, ThreadPoolExecutor(threads) as pool:
        answers = [answer for answered in pool.map(refused_requests, range(threads)) for answer in answered]
    assert len(reads) == 1
    assert answers.count(keys) == threads * 25 and answers.count(None) == threads * 25


def test_a_read_that_finds_the_site_deleted_is_not_answered_with_the_keys_a_reread_had_claimed(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold review's test. A reread marked the cached entry as read when it began, keys and all, so a read begun
    earlier and ended after it took the entry for a newer read: it threw away what it had found (the site deleted)
    and answered with keys older than SITE_CACHE_SECONDS, and a request signed with a deleted site's secret was
    accepted. A reread now only spares others a read; the keys stay as old as the read that found them."""
    clock = frozen_cache_clock(monkeypatch)
    name, body = "backpain-advisor", encode({"type": "comment.created", "data": {"comment_id": "c-1"}})
    with sessions.begin() as session:
        _, secret = create_site(session, name)
    cache = SiteKeyCache(ttl=5)
    with sessions() as session:
        assert cache.get(session, name) is not None  # read at 1000
    with sessions.begin() as session:
        session.delete(require_site(session, name))

    stored_read = sites.get_site
    a_has_read, b_has_claimed, b_may_read = threading.Event(), threading.Event(), threading.Event()

    def get_site(session: Session, wanted: str) -> Site | None:
        if threading.current_thread().name == "A":
            found = stored_read(session, wanted)
            a_has_read.set()
            assert b_has_claimed.wait(10)  # B's reread begins while A's answer is on its way back
            return found
        b_has_claimed.set()
        assert b_may_read.wait(10)
        return stored_read(session, wanted)

    monkeypatch.setattr(sites, "get_site", get_site)
    answers: dict[str, object] = {}

    def request_a() -> None:  # past the cache time: reads the site again, and finds it gone
        with sessions() as session:
            try:
                answers["a"] = signed_by_site(cache, session, name, body, signed_headers(secret, body))
            except SignatureError as error:
                answers["a"] = error

    def reread_b() -> None:  # a request whose signature the cached keys did not verify
        with sessions() as session:
            answers["b"] = cache.reread(session, name)

    clock.now = 1005.1
    a = threading.Thread(target=request_a, name="A")
    a.start()
    assert a_has_read.wait(10)
    clock.now = 1005.2
    b = threading.Thread(target=reread_b, name="B")
    b.start()
    a.join(10)
    b_may_read.set()
    b.join(10)
    assert isinstance(answers["a"], SignatureError), f"a deleted site's request was accepted: {answers['a']!r}"
    assert answers["b"] is None
