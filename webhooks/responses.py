"""JSON answers with one shape for every error: ``{"error", "message", "fields"?}``."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify


def error_response(
    status: int,
    error: str,
    message: str,
    fields: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"error": error, "message": message}
    if fields:
        body["fields"] = fields
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def unavailable() -> Response:
    return error_response(
        503, "unavailable", "the database cannot take requests right now; retry later", headers={"Retry-After": "5"}
    )
