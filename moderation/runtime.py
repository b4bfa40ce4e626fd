"""What a running process (web or worker) hands to the use cases: sessions, the model, the publisher."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from moderation.callbacks import RetryPolicy
from moderation.policy import PolicyLimits
from moderation.registry import ModelStore
from moderation.settled import SettledWork


class TaskPublisher(Protocol):
    """Hands work to the queue. Implemented by the workers package over Celery."""

    def classify(self, comment_id: int, revision: int | None = None) -> None: ...

    def notify(self, delivery_id: int) -> None: ...

    def notify_many(self, delivery_ids: list[int]) -> None: ...


@dataclass
class Runtime:
    sessions: sessionmaker[Session]
    models: ModelStore
    publisher: TaskPublisher
    settled: SettledWork = field(default_factory=SettledWork)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limits: PolicyLimits = field(default_factory=PolicyLimits)
    outbox_quiet: timedelta = timedelta(seconds=30)
    callback_timeout: float = 10.0
    classify_batch: int = 20  # comments one classify task decides when more are waiting
    secret_overlap: timedelta = timedelta(hours=24)
    model_dir: Path = Path("var/models")
    data_dir: Path | None = None
