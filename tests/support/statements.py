"""The statements an engine sends to the database, recorded while a block runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event


def _not_begin(statement: str) -> bool:
    return not statement.startswith("BEGIN")  # SQLite's transactions begin with a statement of their own


@contextmanager
def statements_run(engine: Engine, keeping: Callable[[str], object] = _not_begin) -> Iterator[list[str]]:
    """The statements sent to the database meanwhile that ``keeping`` accepts (a growing list, in order)."""
    statements: list[str] = []

    def keep(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if keeping(statement):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", keep)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", keep)
