"""Worker tasks called as a worker calls them, on the real database and Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery.exceptions import Retry
from prometheus_client import REGISTRY

from moderation.registry import RegistryError
from server.factory import build_celery
from server.settings import Settings
from workers.app import CLASSIFY_TASK, CeleryOptions, ModerationCelery


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


def test_every_task_ends_before_the_broker_would_hand_it_to_another_worker(celery: ModerationCelery) -> None:
    """With late acks, Redis redelivers a task still unacknowledged after the visibility timeout, even while
    its first worker is busy with it: a task allowed to run longer could run twice. The hard limit counts (a
    soft one is an exception that code may catch and go on)."""
    visibility = CeleryOptions(broker_url="redis://unused").visibility_timeout
    ours = {name: task for name, task in celery.tasks.items() if not name.startswith("celery.")}
    assert ours
    for name, task in ours.items():
        limit = task.time_limit
        assert limit is not None, f"{name} has no hard time limit"
        assert limit < visibility, f"{name} may run {limit} s, past the {visibility} s visibility timeout"
