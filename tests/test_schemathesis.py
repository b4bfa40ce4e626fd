"""Schemathesis against the OpenAPI document the app serves (/openapi.json), through the WSGI app.

Every operation gets generated requests twice: as generated (mostly unsigned, so refused before the
database is touched) and then signed with a real site's secret (the body re-serialized and signed, the
``site`` named), which takes them through validation, storage and the pull API. No answer may be a 5xx."""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.conftest import SiteCredentials
from tests.support.signing import sign_from_spec, signed_headers
from webhooks.openapi import openapi_document

# Schemathesis's own pytest integration (``schemathesis.pytest.from_fixture(...).parametrize()``) fails
# on this pytest (it reads ``Function._nodeid``, gone in pytest 9), so each operation is driven here with
# the operation's Hypothesis strategy instead: the same generated cases and the same checks.
OPERATIONS = [(method.upper(), path) for path, methods in openapi_document()["paths"].items() for method in methods]

BOUNDED = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)


def _signed_request(case: Any, site: SiteCredentials) -> dict[str, Any]:
    """The case as a request the site itself could have sent: ``site`` named, headers signed."""
    query = dict(case.query or {})
    body = b""
    if case.method.upper() == "POST":
        payload = case.body
        if isinstance(payload, dict) and isinstance(payload.get("data"), dict):
            payload = {**payload, "data": {**payload["data"], "site": site.name}}
        if isinstance(payload, bytes):
            body = payload
        elif isinstance(payload, str):
            body = payload.encode("utf-8", "surrogatepass")
        else:
            body = json.dumps(payload).encode()
    if "site" in query or case.path.startswith("/api/"):  # the API names its site in the query, POST too
        query["site"] = site.name
    headers = signed_headers(site.secret, body, signer=sign_from_spec)
    return {"method": case.method, "path": case.formatted_path, "query_string": query, "data": body, "headers": headers}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_operation_answers_a_server_error(
    app: Flask, client: FlaskClient, site: SiteCredentials, method: str, path: str, mode: GenerationMode
) -> None:
    api = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operation = api[path][method]

    spec = openapi_document()["paths"][path][method.lower()]
    if mode == GenerationMode.NEGATIVE and not (spec.get("parameters") or spec.get("requestBody")):
        pytest.skip("no parameters or body to break")

    @BOUNDED
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        # As generated (the schema's own headers and bodies; signatures are almost never valid).
        case.call_and_validate(checks=[not_a_server_error])

        # Signed by a real site, so the request reaches validation, storage and the pull API.
        request = _signed_request(case, site)
        response = client.open(
            request["path"],
            method=request["method"],
            query_string=request["query_string"],
            data=request["data"],
            headers=request["headers"],
        )
        text = response.get_data(as_text=True)[:500]
        assert response.status_code < 500, (request, response.status_code, text)
        if path == "/webhooks/comments":
            assert response.status_code in {200, 202, 400, 401, 409, 413, 415, 429}, (request, text)
        case.validate_response(response, checks=[not_a_server_error])

    run()
