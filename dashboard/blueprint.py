"""The blueprint every dashboard view is registered on, and the URL converter its row ids use."""

import re
from typing import Any

from flask import Blueprint
from werkzeug.routing import IntegerConverter, Map

from models.entities import MAX_ROW_ID

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)


class RowIdConverter(IntegerConverter):
    """``<row_id:name>``: a positive id a table can hold, so a larger one is a 404 like any missing row
    (the database would refuse to compare it)."""

    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        super().__init__(url_map, min=1, max=MAX_ROW_ID)


ROW_ID_RE = re.compile(r"[0-9]{1,19}")  # ASCII only: str.isdigit() also takes "²" and "١٢"


def form_row_id(value: str) -> int | None:
    """A row id sent in a form field, as the URL converter reads one; None for any other text."""
    if not ROW_ID_RE.fullmatch(value):
        return None
    number = int(value)
    return number if 1 <= number <= MAX_ROW_ID else None
