"""The bare reference's worker: one comment per task, classified with the service's active model.

    DATABASE_URL=... REDIS_URL=... MODEL_PATH=... MODEL_SHA256=... \\
        celery -A bench.reference.worker worker --queues reference --concurrency 1
"""

from __future__ import annotations

import functools
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from celery import Celery
from sqlalchemy import Engine, text

from bench.reference.schema import INSERT_DECISION, TASK_NAME, TASK_QUEUE
from models.db import create_db_engine
from moderation.classifier import ModerationModel
from moderation.features import CommentText
from moderation.policy import Thresholds
from moderation.registry import load_artifact

app = Celery("reference", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(task_ignore_result=True, task_default_queue=TASK_QUEUE, worker_hijack_root_logger=False)


@functools.cache
def _engine() -> Engine:
    return create_db_engine(os.environ["DATABASE_URL"])  # after fork: one pool per worker process


@functools.cache
def _model() -> ModerationModel:
    card = json.loads(os.environ.get("MODEL_CARD", "{}"))
    return load_artifact(Path(os.environ["MODEL_PATH"]), os.environ["MODEL_SHA256"], card)


def outcome(spam: float, advice: float, thresholds: Thresholds) -> str:
    if spam >= thresholds.spam_reject:
        return "reject"
    if spam >= thresholds.spam_hold or advice >= thresholds.advice_hold:
        return "hold"
    return "approve"


@app.task(name=TASK_NAME)
def classify(comment_id: int) -> None:
    model = _model()
    with _engine().begin() as connection:
        row = connection.execute(
            text("SELECT body, author_name, author_email, author_url, article_id FROM ref_comments WHERE id = :id"),
            {"id": comment_id},
        ).one()
        scores = model.score(
            CommentText(body=row[0], author=row[1] or "", email=row[2] or "", url=row[3] or "", article=row[4])
        )
        thresholds = Thresholds(**model.card.get("thresholds", {}))
        connection.execute(
            text(INSERT_DECISION),
            {
                "comment_id": comment_id,
                "outcome": outcome(scores.spam, scores.medical_advice, thresholds),
                "spam_score": scores.spam,
                "advice_score": scores.medical_advice,
                "model_version": model.version,
                "created_at": datetime.now(UTC),
            },
        )
