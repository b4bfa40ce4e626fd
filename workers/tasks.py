"""Thin tasks: take ids, call ``moderation`` in one transaction, publish what follows after commit."""

from __future__ import annotations

import functools
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from celery import Task, shared_task
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import joinedload

from models.entities import DeliveryStatus, Site
from moderation import callbacks, outbox
from moderation.decisions import decide_comment
from moderation.intake import purge_receipts
from moderation.learning import retrain
from moderation.metrics import (
    CALLBACK_ATTEMPTS,
    CLASSIFY_SECONDS,
    END_TO_END_SECONDS,
    OUTBOX_RELAYED,
    record_decision,
)
from moderation.privacy import apply_retention
from moderation.registry import RegistryError
from moderation.runtime import Runtime
from moderation.sites import signing_secret
from workers.app import (
    CLASSIFY_TASK,
    NOTIFY_TASK,
    PURGE_RECEIPTS_TASK,
    RELAY_OUTBOX_TASK,
    RETENTION_TASK,
    RETRAIN_TASK,
    RETRY_CALLBACKS_TASK,
)
from workers.delivery import post_callback
from workers.publisher import CeleryPublisher

log = logging.getLogger(__name__)

RECEIPT_RETENTION = timedelta(days=7)


def _runtime(task: Task) -> Runtime:
    runtime: Runtime = task.app.runtime
    return runtime


@functools.cache
def _http_client() -> httpx.Client:
    return httpx.Client(follow_redirects=False, limits=httpx.Limits(max_connections=20))


@shared_task(
    name=CLASSIFY_TASK,
    bind=True,
    soft_time_limit=60,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=None,
)
def classify_comment(self: Task, comment_id: int) -> str:
    runtime = _runtime(self)
    try:
        model = runtime.models.current()
    except RegistryError as error:
        log.error("cannot classify: %s", error, extra={"comment_id": comment_id})
        raise self.retry(countdown=30, max_retries=None) from error
    started = time.perf_counter()
    try:
        with runtime.sessions.begin() as session:
            decided = decide_comment(session, comment_id, model, datetime.now(UTC), runtime.limits)
    except IntegrityError:
        # Another worker decided it first (a redelivered or relayed duplicate): nothing to do.
        log.info("comment already decided by another worker", extra={"comment_id": comment_id})
        return "already-decided"
    if decided is None:
        return "skipped"
    CLASSIFY_SECONDS.observe(time.perf_counter() - started)
    END_TO_END_SECONDS.observe(max(0.0, (datetime.now(UTC) - decided.received_at).total_seconds()))
    record_decision(decided.outcome, decided.reasons)
    log.info("comment decided", extra={"comment_id": comment_id, "outcome": decided.outcome})
    if decided.delivery_id is not None:
        _publish_notify(runtime, decided.delivery_id)
    return decided.outcome


def _publish_notify(runtime: Runtime, delivery_id: int) -> None:
    try:
        runtime.publisher.notify(delivery_id)
    except Exception:  # the callback retry loop finds the pending row
        log.warning(
            "could not publish notify; the retry loop will send it", extra={"delivery_id": delivery_id}, exc_info=True
        )


@shared_task(
    name=NOTIFY_TASK,
    bind=True,
    soft_time_limit=120,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=None,
)
def notify_site(self: Task, delivery_id: int) -> str:
    runtime = _runtime(self)
    with runtime.sessions.begin() as session:
        delivery = callbacks.claim_delivery(session, delivery_id, datetime.now(UTC), runtime.retry)
        if delivery is None:
            return "not-due"
        site = session.get(Site, delivery.site_id, options=[joinedload(Site.secrets)])  # signs with them
        if site is None or not site.callback_url:
            delivery.status = "dead"
            delivery.last_error = "the site has no callback URL"
            return "no-url"
        target = (site.callback_url, signing_secret(site), delivery.message_id, dict(delivery.payload))
    url, secret, message_id, payload = target
    attempt = post_callback(_http_client(), url, secret, message_id, payload, runtime.callback_timeout)
    with runtime.sessions.begin() as session:
        recorded = callbacks.record_attempt(
            session,
            delivery_id,
            status_code=attempt.status_code,
            delivered=attempt.ok,
            error=attempt.error,
            retry_after=attempt.retry_after,
            now=datetime.now(UTC),
            policy=runtime.retry,
        )
    if recorded is None:
        return "gone"
    if recorded == DeliveryStatus.CANCELLED:
        return "cancelled"  # an edit or deletion withdrew it while it was in flight: it stays withdrawn
    status = recorded
    CALLBACK_ATTEMPTS.labels(result="delivered" if attempt.ok else f"failed:{status}").inc()
    log.info(
        "callback attempt",
        extra={
            "delivery_id": delivery_id,
            "comment_id": payload["data"]["id"],
            "status_code": attempt.status_code,
            "delivery_status": status,
        },
    )
    return status


@shared_task(name=RELAY_OUTBOX_TASK, bind=True, soft_time_limit=60, expires=30)
def relay_outbox(self: Task) -> int:
    """Publish again the work whose broker message may have been lost."""
    runtime = _runtime(self)
    now = datetime.now(UTC)
    with runtime.sessions.begin() as session:
        due = [(m.id, m.comment_id) for m in outbox.due_messages(session, now, runtime.outbox_quiet)]
    published = _publish_each(due, CeleryPublisher(self.app).classify)
    if published:
        with runtime.sessions.begin() as session:
            outbox.mark_published(session, published, now)
        OUTBOX_RELAYED.inc(len(published))
        log.info("outbox relayed", extra={"count": len(published)})
    return len(published)


@shared_task(name=RETRY_CALLBACKS_TASK, bind=True, soft_time_limit=60, expires=30)
def retry_due_callbacks(self: Task) -> int:
    runtime = _runtime(self)
    with runtime.sessions.begin() as session:
        due = [(delivery_id, delivery_id) for delivery_id in callbacks.due_deliveries(session, datetime.now(UTC))]
    return len(_publish_each(due, CeleryPublisher(self.app).notify))


def _publish_each(items: list[tuple[int, int]], publish: Any) -> list[int]:
    """Publish ``publish(argument)`` for each ``(row id, argument)``; stop at the first broker failure."""
    done = []
    for row_id, argument in items:
        try:
            publish(argument)
        except Exception:
            log.warning("broker unavailable; will try again on the next beat", exc_info=True)
            break
        done.append(row_id)
    return done


@shared_task(name=PURGE_RECEIPTS_TASK, bind=True, soft_time_limit=300, expires=600)
def purge_old_receipts(self: Task) -> int:
    runtime = _runtime(self)
    with runtime.sessions.begin() as session:
        return purge_receipts(session, datetime.now(UTC) - RECEIPT_RETENTION)


@shared_task(name=RETENTION_TASK, bind=True, soft_time_limit=1800, expires=1800)
def apply_retention_limits(self: Task, personal_days: int = 30, closed_days: int = 365) -> dict[str, int]:
    """Forget personal data past its retention (RETAIN_PERSONAL_DAYS, RETAIN_CLOSED_DAYS); 0 days keeps it."""
    runtime = _runtime(self)
    # Batches commit one by one within a time budget, so the soft time limit never rolls work back.
    done = apply_retention(runtime.sessions, datetime.now(UTC), personal_days, closed_days)
    result = {"network_cleared": done.network_cleared, "closed_anonymized": done.closed_anonymized}
    log.info("retention applied", extra=result)
    return result


@shared_task(name=RETRAIN_TASK, bind=True, soft_time_limit=4 * 3600, time_limit=4 * 3600 + 300, expires=3600)
def retrain_model(self: Task) -> str:
    """Scheduled retraining with the moderators' labels; the new version is activated only if not worse."""
    runtime = _runtime(self)
    result = retrain(runtime.sessions, runtime.model_dir, runtime.data_dir)
    log.info(
        "retrained", extra={"model_version": result.version, "activated": result.activated, "problems": result.problems}
    )
    return result.version if result.activated else f"{result.version} (kept inactive)"
