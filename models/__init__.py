"""The data layer: typed SQLAlchemy 2.0 mappings, engines and sessions, Alembic migrations.

Nothing here knows about Flask, Celery or the environment: callers pass URLs and sessions in.
"""

from models.base import Base
from models.db import create_db_engine, make_session_factory
from models.entities import (
    CallbackDelivery,
    Comment,
    Decision,
    DeliveryStatus,
    ListEntry,
    ModelVersion,
    ModerationAction,
    Moderator,
    OutboxMessage,
    Site,
    SiteSecret,
    TrainingLabel,
    WebhookReceipt,
)
from models.migrate import upgrade_database

__all__ = [
    "Base",
    "CallbackDelivery",
    "Comment",
    "Decision",
    "DeliveryStatus",
    "ListEntry",
    "ModelVersion",
    "ModerationAction",
    "Moderator",
    "OutboxMessage",
    "Site",
    "SiteSecret",
    "TrainingLabel",
    "WebhookReceipt",
    "create_db_engine",
    "make_session_factory",
    "upgrade_database",
]
