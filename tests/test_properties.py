"""Bad input, generated: arbitrary payloads, bytes, header combinations and signatures through the Flask
test client (on SQLite and PostgreSQL), and the signature check as a pure property. The intake must always
answer a clear status (never a 500) and store nothing unless it answers 2xx (DESIGN section 5)."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from models.entities import Comment, OutboxMessage
from tests.conftest import SiteCredentials
from tests.support.signing import comment_event, sign_from_spec, sign_with_library, signed_headers
from webhooks.signatures import SignatureError, verify_signature

ALLOWED = {200, 202, 400, 401, 409, 413, 415, 429}  # 409: a comment id reused for another body
# Function-scoped fixtures (client, site, engine) are shared by all examples on purpose: the state the
# examples build up (stored comments, seen webhook ids) is part of what they probe.
BOUNDED = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


def counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        return (
            int(connection.scalar(select(func.count()).select_from(Comment)) or 0),
            int(connection.scalar(select(func.count()).select_from(OutboxMessage)) or 0),
        )


def check_answer(response: Any, before: tuple[int, int], after: tuple[int, int]) -> None:
    note_event(f"status {response.status_code}")  # --hypothesis-show-statistics shows how deep examples got
    assert response.status_code in ALLOWED, (response.status_code, response.get_data(as_text=True)[:500])
    if response.status_code == 202:
        assert after == (before[0] + 1, before[1] + 1)
        assert response.get_json()["status"] == "pending"
    else:
        assert after == before, f"{response.status_code} but the database changed"
    if response.status_code in (200, 202):
        assert isinstance(response.get_json()["id"], int)
    elif response.status_code != 413:
        answer = response.get_json()
        assert answer is not None and answer["error"] and answer["message"]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    return found


def _set(document: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool = False) -> None:
    parent: Any = document
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    """A valid comment event with a few random edits: replaced values, removed fields, extra fields."""
    event = comment_event(
        "backpain-advisor",
        draw(st.text(min_size=1, max_size=30)),
        body=draw(st.text(min_size=1, max_size=300)),
    )
    event["data"]["author"]["ip"] = str(draw(st.ip_addresses()))
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(event)
        if not paths:  # every field edited away already
            break
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "extra"]))
        if action == "replace":
            _set(event, path, draw(json_values))
        elif action == "delete":
            _set(event, path, None, delete=True)
        else:
            target: Any = event
            for key in path[:-1]:
                target = target[key]
            if isinstance(target, dict):
                target[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
    return event if draw(st.integers(0, 9)) else draw(json_values)  # one in ten: any JSON at all


@BOUNDED
@given(event=mutated_events(), signer_is_spec=st.booleans())
def test_any_json_payload_signed_by_the_site_gets_a_clear_answer(
    client: FlaskClient, site: SiteCredentials, engine: Engine, event: Any, signer_is_spec: bool
) -> None:
    body = json.dumps(event).encode()
    headers = signed_headers(site.secret, body, signer=sign_from_spec if signer_is_spec else sign_with_library)
    before = counts(engine)
    response = client.post("/webhooks/comments", data=body, headers=headers)
    check_answer(response, before, counts(engine))


@BOUNDED
@given(
    body=st.one_of(
        st.binary(max_size=400),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        json_values.map(lambda v: json.dumps(v).encode()),
    ),
    content_type=st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded", ""]
    ),
    signed=st.booleans(),
)
def test_random_bytes_get_a_clear_answer_and_store_nothing(
    client: FlaskClient, site: SiteCredentials, engine: Engine, body: bytes, content_type: str, signed: bool
) -> None:
    headers = signed_headers(site.secret, body, signer=sign_from_spec) if signed else {}
    if content_type:
        headers["content-type"] = content_type
    else:
        headers.pop("content-type", None)
    before = counts(engine)
    response = client.post("/webhooks/comments", data=body, headers=headers)
    check_answer(response, before, counts(engine))
    assert response.status_code not in (200, 202)


def _timestamps() -> st.SearchStrategy[str]:
    """webhook-timestamp values: near now, far off, or not integers at all. The strategy draws offsets and
    templates, never the clock itself, so its shape is the same from one example to the next."""
    return st.one_of(
        st.integers(-100, 100).map(lambda offset: f"{{now{offset:+d}}}"),
        st.integers(-(10**15), 10**15).map(str),
        st.floats(allow_nan=True).map(str),
        st.sampled_from(["", " ", "{now}.5", " {now}", "{now} ", "+{now}", "0x{now:x}", "１２３", "1e9"]),
        header_text.map(lambda text: text.replace("{", "{{").replace("}", "}}")),
    )


def render_timestamp(template: str, now: int | None = None) -> str:
    """Fill a template from _timestamps() in with the current time ("{now+5}" is five seconds ahead)."""
    now = int(datetime.now(UTC).timestamp()) if now is None else now
    offsets = {f"now{offset:+d}": now + offset for offset in range(-100, 101)}
    return template.format(now=now, **offsets)


def _signatures(correct: str) -> st.SearchStrategy[str]:
    digest = correct.split(",", 1)[1]
    return st.one_of(
        st.just(correct),
        st.just(digest),  # the signature without "v1,"
        st.just(f"v2,{digest}"),
        st.just(f"v1,{digest}"[:-4] + "AAA="),
        st.just(f"v1,{digest},extra"),
        st.lists(st.sampled_from([correct, "v1,", "v1,@@@", "v1,QUJD", ",", "v1", "v1,,"]), max_size=4).map(" ".join),
        header_text,
    )


@BOUNDED
@given(data=st.data())
def test_header_combinations_get_a_clear_answer(
    client: FlaskClient, site: SiteCredentials, engine: Engine, data: st.DataObject
) -> None:
    event = comment_event(site.name, data.draw(st.text(min_size=1, max_size=20)))
    event["data"]["author"]["ip"] = str(data.draw(st.ip_addresses()))
    body = json.dumps(event).encode()
    correct = signed_headers(site.secret, body)
    headers: dict[str, str] = {"content-type": "application/json"}
    choices = {
        "webhook-id": st.one_of(st.just(correct["webhook-id"]), header_text, st.text(min_size=201, max_size=260)),
        "webhook-timestamp": st.one_of(st.just(correct["webhook-timestamp"]), _timestamps()).map(
            lambda template: render_timestamp(template, int(correct["webhook-timestamp"]))
        ),
        "webhook-signature": _signatures(correct["webhook-signature"]),
    }
    for name, strategy in choices.items():
        if data.draw(st.integers(0, 4)):  # one in five: the header is missing
            headers[name] = data.draw(strategy.filter(lambda v: "\n" not in v and "\r" not in v), label=name)
    before = counts(engine)
    response = client.post("/webhooks/comments", data=body, headers=headers)
    check_answer(response, before, counts(engine))
    if headers != correct:
        # Anything but the exact signed triple is refused (a list holding the right signature is fine).
        exact = all(headers.get(k) == correct[k] for k in ("webhook-id", "webhook-timestamp"))
        if not (exact and correct["webhook-signature"] in headers.get("webhook-signature", "").split(" ")):
            assert response.status_code == 401, response.get_data(as_text=True)


# --- verify_signature: accepts exactly the correctly signed messages -----------------------------

secrets_ = st.binary(min_size=16, max_size=64).map(lambda key: "whsec_" + base64.b64encode(key).decode())
message_ids = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=200)


def _headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_from_spec(secret, message_id, timestamp, body),
    }


def _valid_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _refused(body: bytes, headers: dict[str, str], secret_list: list[str]) -> bool:
    try:
        verify_signature(body, headers, secret_list)
    except SignatureError:
        return True
    return False


@settings(max_examples=200, deadline=None)
@given(secret=secrets_, message_id=message_ids, body=st.binary(max_size=500), skew=st.integers(-250, 250))
def test_a_correct_signature_verifies(secret: str, message_id: str, body: bytes, skew: int) -> None:
    assume(_valid_utf8(body))
    timestamp = int(datetime.now(UTC).timestamp()) + skew
    assert verify_signature(body, _headers(secret, message_id, timestamp, body), [secret]) == message_id
    # Also among other secrets (rotation) and among other signatures in the header.
    headers = _headers(secret, message_id, timestamp, body)
    headers["webhook-signature"] = (
        f"v1,{base64.b64encode(secrets.token_bytes(32)).decode()} " + (headers["webhook-signature"])
    )
    other = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    assert verify_signature(body, headers, [other, secret]) == message_id


@settings(max_examples=200, deadline=None)
@given(
    secret=secrets_,
    message_id=message_ids,
    body=st.text(max_size=300).map(lambda t: t.encode()),
    data=st.data(),
)
def test_any_change_to_body_id_or_timestamp_is_refused(
    secret: str, message_id: str, body: bytes, data: st.DataObject
) -> None:
    timestamp = int(datetime.now(UTC).timestamp())
    headers = _headers(secret, message_id, timestamp, body)
    change = data.draw(st.sampled_from(["body", "id", "timestamp", "secret", "no-v1"]))
    if change == "body":
        changed = bytearray(body or b"{")
        if body:
            index = data.draw(st.integers(0, len(body) - 1))
            changed[index] ^= data.draw(st.integers(1, 255))
        assert _refused(bytes(changed), headers, [secret])
    elif change == "id":
        other = data.draw(message_ids.filter(lambda m: m != message_id))
        assert _refused(body, dict(headers, **{"webhook-id": other}), [secret])
    elif change == "timestamp":
        delta = data.draw(st.integers(-250, 250).filter(bool))
        assert _refused(body, dict(headers, **{"webhook-timestamp": str(timestamp + delta)}), [secret])
    elif change == "secret":
        other = data.draw(secrets_.filter(lambda s: s != secret))
        assert _refused(body, headers, [other])
    else:
        digest = headers["webhook-signature"].split(",", 1)[1]
        prefix = data.draw(st.sampled_from(["", "v2,", "v1;", "V1,", "v1 ,"]))
        assert _refused(body, dict(headers, **{"webhook-signature": prefix + digest}), [secret])


@settings(max_examples=150, deadline=None)
@given(
    secret=secrets_,
    message_id=message_ids,
    body=st.binary(max_size=300),
    timestamp=_timestamps(),
    signature=st.one_of(header_text, st.text(max_size=80)),
)
def test_verify_signature_raises_only_signature_errors(
    secret: str, message_id: str, body: bytes, timestamp: str, signature: str
) -> None:
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": render_timestamp(timestamp),
        "webhook-signature": signature,
    }
    assert _refused(body, headers, [secret])


def test_a_correctly_signed_body_that_is_not_utf8_is_refused_not_crashed() -> None:
    # The library verifies text; the intake refuses non-UTF-8 bodies with a 400 before it gets here.
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    body = b'{"x": "\xff"}'
    timestamp = int(datetime.now(UTC).timestamp())
    assert _refused(body, _headers(secret, "msg_1", timestamp, body), [secret])


# --- malformed bodies, named one by one ----------------------------------------------------------


def _mutate(site: str, change: Any) -> bytes:
    event = comment_event(site, f"c-{secrets.token_hex(4)}")
    event["data"]["author"]["ip"] = f"192.0.2.{secrets.randbelow(250) + 1}"
    result = change(event)  # either edits the event in place (returning None) or returns a replacement
    return result if isinstance(result, bytes) else json.dumps(result if result is not None else event).encode()


MALFORMED: dict[str, Any] = {
    "invalid-utf8": lambda e: json.dumps(e).encode().replace(b"Massage", b"Mass\xffage"),
    "overlong-utf8": lambda e: json.dumps(e).encode().replace(b"Massage", b"Mass\xc0\xafage"),
    "lone-surrogate": lambda e: json.dumps(e).encode().replace(b"Massage", b"Mass\\ud800age"),
    "nul-in-body": lambda e: e["data"].update(body="a\x00b"),
    "deep-nesting-array": lambda e: b"[" * 30_000 + b"]" * 30_000,
    "deep-nesting-object": lambda e: (b'{"a":' * 10_000) + b"1" + b"}" * 10_000,
    "deep-nesting-in-field": lambda e: e["data"].update(parent_id=json.loads("[" * 500 + "]" * 500)),
    "huge-body-field": lambda e: e["data"].update(body="x" * 20_001),
    "huge-title": lambda e: e["data"]["article"].update(title="t" * 501),
    "huge-number": lambda e: json.dumps(e).encode().replace(b'"parent_id": null', b'"parent_id": ' + b"9" * 5000),
    "wrong-type-body": lambda e: e["data"].update(body=["not", "text"]),
    "wrong-type-article": lambda e: e["data"].update(article="massage-therapy"),
    "wrong-type-data": lambda e: dict(e, data=[e["data"]]),
    "wrong-type-site": lambda e: e["data"].update(site=["backpain-advisor"]),
    "bool-comment-id": lambda e: e["data"].update(comment_id=True),
    "extra-top-field": lambda e: dict(e, extra=1),
    "extra-data-field": lambda e: e["data"].update(score=1.0),
    "extra-author-field": lambda e: e["data"]["author"].update(phone="555"),
    "missing-type": lambda e: {k: v for k, v in e.items() if k != "type"},
    "wrong-event-type": lambda e: dict(e, type="comment.deleted"),
    "bad-ip": lambda e: e["data"]["author"].update(ip="999.1.1.1"),
    "bad-created-at": lambda e: e["data"].update(created_at="yesterday"),
    "naive-created-at": lambda e: e["data"].update(created_at="2026-11-26T10:00:00"),
    "blank-body": lambda e: e["data"].update(body=" \n\t "),
    "top-level-array": lambda e: [e],
    "top-level-string": lambda e: b'"comment"',
    "empty": lambda e: b"",
    "nan": lambda e: json.dumps(e).encode().replace(b'"parent_id": null', b'"parent_id": NaN'),
    "trailing-garbage": lambda e: json.dumps(e).encode() + b"}",
    "bom": lambda e: b"\xef\xbb\xbf" + json.dumps(e).encode(),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_signed_bodies_are_a_clear_4xx(
    client: FlaskClient, site: SiteCredentials, engine: Engine, case: str
) -> None:
    body = _mutate(site.name, MALFORMED[case])
    before = counts(engine)
    response = client.post(
        "/webhooks/comments", data=body, headers=signed_headers(site.secret, body, signer=sign_from_spec)
    )
    assert response.status_code in (400, 401, 413), (response.status_code, response.get_data(as_text=True)[:300])
    assert response.get_json()["error"]
    assert counts(engine) == before


@pytest.mark.parametrize(
    ("case", "headers"),
    [
        ("no-headers", {}),
        ("no-signature", {"webhook-signature": None}),
        ("no-id", {"webhook-id": None}),
        ("no-timestamp", {"webhook-timestamp": None}),
        ("float-timestamp", {"webhook-timestamp": "1764151200.5"}),
        ("negative-timestamp", {"webhook-timestamp": "-5"}),
        ("word-timestamp", {"webhook-timestamp": "now"}),
        ("signature-without-v1", {"webhook-signature": "strip-v1"}),
        ("signature-v2", {"webhook-signature": "v2-instead"}),
        ("empty-signature", {"webhook-signature": ""}),
        ("no-content-type", {"content-type": None}),
    ],
)
def test_missing_or_malformed_headers_are_a_clear_4xx(
    client: FlaskClient, site: SiteCredentials, engine: Engine, case: str, headers: dict[str, str | None]
) -> None:
    body = _mutate(site.name, lambda e: None)
    sent: dict[str, str] = signed_headers(site.secret, body) if headers else {"content-type": "application/json"}
    for name, value in headers.items():
        if value is None:
            sent.pop(name, None)
        elif value == "strip-v1":
            sent[name] = sent[name].removeprefix("v1,")
        elif value == "v2-instead":
            sent[name] = "v2," + sent[name].removeprefix("v1,")
        else:
            sent[name] = value
    before = counts(engine)
    response = client.post("/webhooks/comments", data=body, headers=sent)
    assert response.status_code == (415 if case == "no-content-type" else 401), response.get_data(as_text=True)
    assert response.get_json()["error"]
    assert counts(engine) == before


# --- the pull API with ids beyond the database's integer range -----------------------------------

OUT_OF_RANGE = 2**63  # one past the largest BIGINT; SQLite's INTEGER is 64-bit too


@pytest.mark.parametrize(
    ("path", "query"),
    [(f"/api/comments/{OUT_OF_RANGE}", {}), ("/api/comments", {"after": str(OUT_OF_RANGE)})],
    ids=["get-comment", "list-after"],
)
def test_pull_api_ids_out_of_range_are_not_a_500(
    app: Flask, site: SiteCredentials, path: str, query: dict[str, str]
) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False  # see the status a real server would send
    response = app.test_client().get(
        path, query_string={"site": site.name, **query}, headers=signed_headers(site.secret, b"")
    )
    assert response.status_code in (200, 400, 404), response.status_code


# --- NUL characters reaching PostgreSQL before validation ----------------------------------------

# A NUL reaches no lookup: PostgreSQL text cannot hold it, so names and ids are checked first.


def _nul_requests(site: SiteCredentials) -> dict[str, dict[str, Any]]:
    event = comment_event("back\x00pain", "c-nul")
    body = json.dumps(event).encode()
    return {
        "intake-site": {
            "method": "POST",
            "path": "/webhooks/comments",
            "data": body,
            "headers": signed_headers(site.secret, body, signer=sign_from_spec),
        },
        "api-site": {
            "method": "GET",
            "path": "/api/comments",
            "query_string": {"site": "\x00"},
            "headers": signed_headers(site.secret, b""),
        },
        "api-article": {
            "method": "GET",
            "path": "/api/comments",
            "query_string": {"site": site.name, "article": "a\x00b"},
            "headers": signed_headers(site.secret, b""),
        },
    }


@pytest.mark.parametrize("case", ["intake-site", "api-site", "api-article"])
def test_a_nul_character_in_a_looked_up_value_is_not_a_500(
    app: Flask, site: SiteCredentials, engine: Engine, case: str
) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False  # see the status a real server would send
    sent = _nul_requests(site)[case]
    response = app.test_client().open(
        sent["path"],
        method=sent["method"],
        data=sent.get("data"),
        query_string=sent.get("query_string"),
        headers=sent["headers"],
    )
    assert response.status_code in (200, 400, 401), response.status_code
