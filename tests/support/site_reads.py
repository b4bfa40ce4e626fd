"""What a web process asks the database about sites, counted, and a clock for its site key cache.

Requests that are refused must not cost a database read each: these count the statements that read the
``sites`` table on the app's own engine, and let a test move the cache's clock instead of sleeping.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flask import Flask
from sqlalchemy import Engine

from moderation import sites
from tests.support.statements import statements_run

READS_SITES = re.compile(r"\bFROM sites\b", re.IGNORECASE)


@contextmanager
def site_reads(where: Flask | Engine) -> Iterator[list[str]]:
    """The statements reading the ``sites`` table that an app (on its own engine) or an engine runs within
    the block, in order."""
    engine: Engine = where if isinstance(where, Engine) else where.extensions["moderation"].sessions.kw["bind"]
    with statements_run(engine, READS_SITES.search) as statements:
        yield statements


class CacheClock:
    """The monotonic clock ``moderation.sites`` reads, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def frozen_cache_clock(monkeypatch: pytest.MonkeyPatch) -> CacheClock:
    clock = CacheClock()
    monkeypatch.setattr(sites, "time", clock)
    return clock
