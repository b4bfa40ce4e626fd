"""Worker tasks called as a worker calls them, on the real database and Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery.exceptions import Retry
from prometheus_client import REGISTRY

from moderation.registry import RegistryError
from server.factory import build_celery
from server.settings import Settings
from workers.app import CLASSIFY_TASK, ModerationCelery


@pytest.fixture
def celery(settings: Settings) -> Iterator[ModerationCelery]:
    app = build_celery(settings)
    yield app
    app.runtime.sessions.kw["bind"].dispose()


def unavailable() -> float:
    return REGISTRY.get_sample_value("moderation_model_unavailable_total") or 0.0


def test_a_classify_task_without_a_loadable_model_is_put_off_and_counted(celery: ModerationCelery) -> None:
    """No active model: the task asks to be retried later, and the counter says so (the web's /readyz does
    not look at models, so this is what an operator alerts on)."""
    before = unavailable()
    with pytest.raises(Retry) as retried:
        celery.tasks[CLASSIFY_TASK].run(1, 0)
    assert isinstance(retried.value.__cause__, RegistryError) and "no model is active" in str(retried.value.__cause__)
    assert unavailable() == before + 1
