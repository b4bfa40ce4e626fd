"""Thin tasks: take ids, call ``moderation`` in one transaction, publish what follows after commit."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from models.entities import CallbackDelivery, DeliveryStatus
from moderation import callbacks, outbox
from moderation.classifier import ModerationModel
from moderation.decisions import (
    TRIES_BEFORE_HOLDING,
    BatchFailedError,
    CountedRuns,
    Decided,
    decide_waiting,
    forget_relayed_try,
    hold_unclassified,
    note_failed_run,
    note_relayed_try,
)
from moderation.intake import purge_receipts
from moderation.learning import retrain
from moderation.metrics import (
    CALLBACK_ATTEMPTS,
    CLASSIFY_SECONDS,
    END_TO_END_SECONDS,
    MODEL_UNAVAILABLE,
    OUTBOX_RELAYED,
    record_decision,
)
from moderation.privacy import apply_retention
from moderation.registry import RegistryError
from moderation.runtime import Runtime
from moderation.sites import SiteError, signing_secrets
from workers.app import (
    CLASSIFY_TASK,
    NOTIFY_TASK,
    PURGE_RECEIPTS_TASK,
    RELAY_EXPIRES,
    RELAY_OUTBOX_TASK,
    RETENTION_TASK,
    RETRAIN_TASK,
    RETRY_CALLBACKS_TASK,
)
from workers.delivery import Attempt, callback_client, post_callback
from workers.publisher import CeleryPublisher

log = logging.getLogger(__name__)

RECEIPT_RETENTION = timedelta(days=7)
NOTIFY_CHUNK = 20  # due callbacks per notify task
PAUSE_CHECK_SECONDS = 1.0  # how long a batch's POSTs go on to a site paused meanwhile, at most
LEASE_MARGIN = timedelta(seconds=1)  # a POST ends this long before its lease at the latest: time to record it


def _runtime(task: Task) -> Runtime:
    runtime: Runtime = task.app.runtime
    return runtime


@functools.cache
def _http_client() -> httpx.Client:
    return callback_client()


@shared_task(
    name=CLASSIFY_TASK,
    bind=True,
    soft_time_limit=60,
    time_limit=90,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=None,
)
def classify_comment(self: Task, comment_id: int, revision: int | None = None) -> str:
    """Decide the comment (and others waiting); ``revision``, when given, is the text this message is about.

    A message without a revision is the outbox relay's (workers.publisher), and one flagged redelivered came
    back from a worker that was lost: something went wrong with the work before, so it decides its comment
    alone, and its runs are counted; past ``TRIES_BEFORE_HOLDING`` of them the comment is held for a person,
    unscored, instead of tried again.
    """
    runtime = _runtime(self)
    if revision is not None and runtime.settled.is_settled(comment_id, revision):
        return "settled"  # decided with an earlier message's batch: nothing to read or lock
    try:
        model = runtime.models.current()
    except RegistryError as error:
        MODEL_UNAVAILABLE.inc()  # the web stays ready meanwhile: this is the signal to alert on
        log.error("cannot classify: %s", error, extra={"comment_id": comment_id})
        raise self.retry(countdown=30, max_retries=None) from error
    # Relayed, or delivered again after its worker was lost (killed in a crash, out of memory): something
    # went wrong with this work before, so it runs alone and its runs are counted.
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    suspect = revision is None or redelivered
    counted = False  # whether this run added to the comment's count of runs
    if suspect:
        # A retry (after a database error, or while no model loads) is the same run and only reads the count;
        # a message delivered again after its worker was lost is a run of its own even if it was retried before.
        count = redelivered or not self.request.retries
        runs = _count_run(runtime, comment_id, count=count, per_publish=not redelivered)
        if runs is not None and runs.tries > TRIES_BEFORE_HOLDING:
            return _hold_unclassified(runtime, comment_id, model)
        counted = runs is not None and runs.added
    started = time.perf_counter()
    try:
        decided = _decide_waiting(runtime, comment_id, model, 1 if suspect else runtime.classify_batch)
    except OperationalError:
        if counted:
            _forget_try(runtime, comment_id)
        raise
    except IntegrityError:
        # Another worker decided it first (a redelivered or relayed duplicate): nothing to do.
        log.info("comment already decided by another worker", extra={"comment_id": comment_id})
        return "already-decided"
    if not decided:
        return "skipped"
    per_comment = (time.perf_counter() - started) / len(decided)
    for _ in decided:
        CLASSIFY_SECONDS.observe(per_comment)
    _after_decisions(runtime, decided)
    return ",".join(str(each.outcome) for each in decided)


def _count_run(runtime: Runtime, comment_id: int, count: bool, per_publish: bool) -> CountedRuns | None:
    """Count this run (a retry after a database error is the same run: ``count`` False only reads)."""
    with runtime.sessions.begin() as session:
        return note_relayed_try(session, comment_id, count, per_publish)


def _forget_try(runtime: Runtime, comment_id: int) -> None:
    try:
        with runtime.sessions.begin() as session:
            forget_relayed_try(session, comment_id)
    except SQLAlchemyError:  # the database is failing: the count stays, as for a run that failed
        log.warning("could not take back a relayed run's count", extra={"comment_id": comment_id}, exc_info=True)


def _hold_unclassified(runtime: Runtime, comment_id: int, model: ModerationModel) -> str:
    try:
        with runtime.sessions.begin() as session:
            held = hold_unclassified(session, comment_id, model.version, datetime.now(UTC))
    except IntegrityError:  # a run that did succeed stored its decision first: the unique index refused this one
        log.info("comment already decided by another worker", extra={"comment_id": comment_id})
        return "already-decided"
    if held is None:
        return "skipped"
    log.error(
        "classifying the comment failed on %d counted runs; held for a person, unscored",
        TRIES_BEFORE_HOLDING,
        extra={"comment_id": comment_id, "model_version": model.version},
    )
    _after_decisions(runtime, [held])
    return str(held.outcome)


def _after_decisions(runtime: Runtime, decided: list[Decided]) -> None:
    """What follows a commit of decisions: remembered as settled, counted, logged, and the sites told."""
    runtime.settled.remember((each.comment_id, each.revision) for each in decided)
    finished = datetime.now(UTC)
    for each in decided:
        END_TO_END_SECONDS.observe(max(0.0, (finished - each.waiting_since).total_seconds()))
        record_decision(each.outcome, each.reasons)
        log.info("comment decided", extra={"comment_id": each.comment_id, "outcome": each.outcome})
    pending = [each.delivery_id for each in decided if each.delivery_id is not None]
    if pending:
        _publish_notify(runtime, pending)


def _decide_waiting(runtime: Runtime, comment_id: int, model: ModerationModel, batch_size: int) -> list[Decided]:
    """Decide the comment with up to ``batch_size`` - 1 others waiting; if that batch fails, each alone.

    A comment whose scoring or policy fails every time then fails only its own decision: it is counted and
    left out of later batches, and its batch-mates are decided here rather than left for the relay. The task
    fails when its own comment did. A database outage is not worth a second try here: OperationalError goes
    to the task's own retry.
    """
    try:
        with runtime.sessions.begin() as session:
            now = datetime.now(UTC)
            return decide_waiting(session, comment_id, model, now, runtime.limits, batch_size)
    except BatchFailedError as failed:
        if isinstance(failed.__cause__, SoftTimeLimitExceeded):
            raise failed.__cause__ from None  # out of time: nothing is tried again in this task
        log.warning(
            "a batch failed (one of its comments, maybe not this one); deciding each of its comments alone",
            extra={"comment_id": comment_id},
            exc_info=True,
        )
        return _decide_each_alone(runtime, comment_id, failed.comment_ids, model)
    except OperationalError:
        raise
    except Exception:
        if batch_size <= 1:
            raise
        log.warning(
            "a batch failed (one of its comments, maybe not this one); deciding this task's comment alone",
            extra={"comment_id": comment_id},
            exc_info=True,
        )
    with runtime.sessions.begin() as session:
        return decide_waiting(session, comment_id, model, datetime.now(UTC), runtime.limits, batch_size=1)


def _decide_each_alone(runtime: Runtime, own: int, batch: list[int], model: ModerationModel) -> list[Decided]:
    """The failed batch's comments one at a time, the task's own first. One that fails alone is counted (and
    so kept out of batches); if that is the task's own, its error is raised once the others are told. Out of
    time or out of database, what was decided is told and the rest is left to its own messages and the relay."""
    decided: list[Decided] = []
    own_error: Exception | None = None
    for comment_id in [own, *(other for other in batch if other != own)]:
        try:
            with runtime.sessions.begin() as session:
                now = datetime.now(UTC)
                decided += decide_waiting(session, comment_id, model, now, runtime.limits, batch_size=1)
        except IntegrityError:
            if comment_id == own:
                _after_decisions(runtime, decided)
                raise
            log.info("comment already decided by another worker", extra={"comment_id": comment_id})
        except (SoftTimeLimitExceeded, OperationalError):
            _after_decisions(runtime, decided)
            raise
        except Exception as error:
            _count_failed_run(runtime, comment_id)
            if comment_id == own:
                own_error = error
            else:
                log.warning(
                    "deciding this comment failed; left out of batches from now on",
                    extra={"comment_id": comment_id},
                    exc_info=True,
                )
    if own_error is not None:
        _after_decisions(runtime, decided)
        raise own_error
    return decided


def _count_failed_run(runtime: Runtime, comment_id: int) -> None:
    try:
        with runtime.sessions.begin() as session:
            note_failed_run(session, comment_id)
    except SQLAlchemyError:  # the database is failing too: the comment's own error is what is raised
        log.warning("could not count a failed run", extra={"comment_id": comment_id}, exc_info=True)


def _publish_notify(runtime: Runtime, delivery_ids: list[int]) -> None:
    try:
        runtime.publisher.notify_many(delivery_ids)
    except Exception:  # the callback retry loop finds the pending rows
        log.warning(
            "could not publish notify; the retry loop will send it", extra={"delivery_ids": delivery_ids}, exc_info=True
        )


@shared_task(
    name=NOTIFY_TASK,
    bind=True,
    soft_time_limit=600,
    time_limit=630,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=None,
)
def notify_site(self: Task, delivery_id: int | None = None, delivery_ids: list[int] | None = None) -> str:
    """Send due callbacks: the ones a classify task just scheduled, or one (``delivery_id``, older messages).

    The claim leases them all until one moment; a POST starts only while the lease outlasts its timeout, so
    no other task can claim a delivery that is on the wire, and what is left when time runs out is released.
    """
    runtime = _runtime(self)
    wanted = list(delivery_ids or []) + ([delivery_id] if delivery_id is not None else [])
    with runtime.sessions.begin() as session:
        claimed = callbacks.claim_deliveries(session, wanted, datetime.now(UTC), runtime.retry)
        targets = [_target(delivery) for delivery in claimed]
    if not targets:
        return "not-due"
    lease = claimed[0].lease_until  # one claim, one lease: every delivery it took shares this moment
    outcomes = []
    turned_off = _SitesTurnedOff(runtime, {t.site_id for t in targets})
    for target in (t for t in targets if t.url is not None):
        try:  # whatever stops the loop, what was sent is recorded below (else it would be sent again)
            if lease is None or datetime.now(UTC) + timedelta(seconds=runtime.callback_timeout) + LEASE_MARGIN >= lease:
                break  # the rest go back to pending for the next task
            if target.site_id in turned_off.now():
                continue  # given back unsent: the claim holds it until the site is on again
            outcome = _send(runtime, target)
        except SoftTimeLimitExceeded:
            log.warning("notify task out of time; what was sent is recorded, the rest go back to pending")
            break
        outcomes.append(outcome)
        if outcome.status_code == 410:
            turned_off.gone(target.site_id)  # its other callbacks here would only be told Gone as well
    sent = {o.delivery_id for o in outcomes}
    with runtime.sessions.begin() as session:
        now = datetime.now(UTC)
        recorded = callbacks.record_attempts(session, outcomes, now, runtime.retry, lease=lease)
        no_url = [t.delivery_id for t in targets if t.url is None]
        unsent = [t.delivery_id for t in targets if t.url is not None and t.delivery_id not in sent]
        # Cleared while these waited: kept until a URL is saved (save_callback_url releases them), not dead.
        callbacks.end_lease(session, no_url, lease, now, held_because="the site has no callback URL")
        callbacks.end_lease(session, unsent, lease, now)
    for outcome in outcomes:
        _count_attempt(outcome, recorded[outcome.delivery_id])
    if outcomes:
        return ",".join(str(recorded[o.delivery_id]) for o in outcomes)
    return "no-url" if no_url else "handed-back"


def _count_attempt(outcome: callbacks.AttemptOutcome, status: str | None) -> None:
    if status is None or status == DeliveryStatus.CANCELLED:
        return  # gone, withdrawn by an edit or deletion while in flight, or no longer ours: left as it is
    CALLBACK_ATTEMPTS.labels(result="delivered" if outcome.delivered else f"failed:{status}").inc()
    fields = {
        "delivery_id": outcome.delivery_id,
        "comment_id": outcome.comment_id,
        "status_code": outcome.status_code,
        "delivery_status": status,
    }
    if outcome.delivered:
        log.info("callback attempt", extra=fields)
        return
    # A warning, with what the site answered: an operator reading the worker's log sees a site failing before
    # the Sites page or the metrics are looked at (it said only "callback attempt" at INFO, with no error).
    answered = f"HTTP {outcome.status_code}" if outcome.status_code is not None else outcome.error[:200]
    log.warning(f"callback {outcome.delivery_id} failed ({answered}); now {status}", extra=fields)


class _SitesTurnedOff:
    """Which of a batch's sites were paused (or sent a 410) since it was claimed, looked up at most once a
    second: a batch to a slow site can take a lease's length, and a pause should not wait that long."""

    def __init__(self, runtime: Runtime, site_ids: set[int]) -> None:
        self._runtime, self._site_ids = runtime, site_ids
        self._checked = time.monotonic()
        self._off: set[int] = set()

    def now(self) -> set[int]:
        if time.monotonic() - self._checked >= PAUSE_CHECK_SECONDS:
            try:
                with self._runtime.sessions() as session:
                    self._off |= callbacks.sites_turned_off(session, self._site_ids)
            except SQLAlchemyError:  # the POSTs already made must still be recorded: go on with what is known
                log.warning("could not look whether sites were paused; going on", exc_info=True)
            self._checked = time.monotonic()
        return self._off

    def gone(self, site_id: int) -> None:
        self._off.add(site_id)


@dataclass(frozen=True, slots=True)
class _Target:
    delivery_id: int
    site_id: int
    comment_id: int
    url: str | None
    secrets: tuple[str, ...]
    message_id: str
    payload: dict[str, Any]


def _target(delivery: CallbackDelivery) -> _Target:
    site = delivery.site
    if not site.callback_url:
        return _Target(delivery.id, site.id, delivery.comment_id, None, (), delivery.message_id, {})
    try:
        secrets = signing_secrets(site)
    except SiteError:  # one site's broken secrets must not fail the batch that also carries other sites'
        secrets = ()
    payload = dict(delivery.payload)
    return _Target(delivery.id, site.id, delivery.comment_id, site.callback_url, secrets, delivery.message_id, payload)


def _send(runtime: Runtime, target: _Target) -> callbacks.AttemptOutcome:
    attempt = _post(runtime, target)
    return callbacks.AttemptOutcome(
        target.delivery_id,
        attempt.status_code,
        attempt.ok,
        attempt.error,
        attempt.retry_after,
        target.comment_id,
        target.url,
    )


def _post(runtime: Runtime, target: _Target) -> Attempt:
    assert target.url is not None
    if not target.secrets:  # unsigned, the site could not tell it from a forgery: a failed attempt, retried later
        log.warning("callback not sent: the site has no usable signing secret", extra={"site_id": target.site_id})
        return Attempt(False, None, "the site has no usable signing secret: rotate one", None)
    try:
        return post_callback(
            _http_client(), target.url, target.secrets, target.message_id, target.payload, runtime.callback_timeout
        )
    except SoftTimeLimitExceeded:
        raise
    except Exception as error:  # whatever a site answers must not end the task with others' outcomes unrecorded
        log.exception("callback attempt failed unexpectedly", extra={"delivery_id": target.delivery_id})
        return Attempt(False, None, f"{type(error).__name__}: {error}", None)


@shared_task(name=RELAY_OUTBOX_TASK, bind=True, soft_time_limit=60, time_limit=90, expires=RELAY_EXPIRES)
def relay_outbox(self: Task) -> int:
    """Publish again the work whose broker message may have been lost (see ``_relay_cutoff`` for which).

    Each row's publish is noted (committed) before its message goes: a worker that takes the message at once
    must see the publish it came from, as its run is counted per publish (moderation.decisions). Rows whose
    message the broker then refused are put back as they were, due again at the next round. While no model
    can be loaded nothing is relayed: each waiting comment's own task is already retrying (classify_comment),
    and a copy sent each quiet time would retry beside it, more and more copies for as long as it lasts.
    """
    runtime = _runtime(self)
    now = datetime.now(UTC)  # before the model is looked for, which may load one for seconds
    try:
        runtime.models.current()
    except RegistryError as error:
        log.debug("outbox relay waits for a model: %s", error)  # classify_comment logs and counts the outage
        return 0
    cutoff = _relay_cutoff(self.request, now, runtime.outbox_quiet)
    with runtime.sessions.begin() as session:
        due = {m.id: m for m in outbox.due_messages(session, cutoff)}
        noted = outbox.mark_published(session, list(due), now, due_before=cutoff)
    work = [(row_id, due[row_id].comment_id) for row_id in due if row_id in noted]
    published = _publish_each(work, CeleryPublisher(self.app).classify)
    sent = set(published)
    refused = {row_id: due[row_id].published_at for row_id, _ in work if row_id not in sent}
    if refused:
        with runtime.sessions.begin() as session:
            outbox.not_published(session, refused)
    if published:
        OUTBOX_RELAYED.inc(len(published))
        log.info("outbox relayed", extra={"count": len(published)})
    return len(published)


# Intake writes a row's time before it commits and publishes, and hosts' clocks differ a little: work
# written this long before the relay's message was sent may still have been published after it.
SEND_MARGIN = timedelta(seconds=5)


def _relay_cutoff(request: Any, now: datetime, quiet: timedelta) -> datetime:
    """Work last published (or written) before this is relayed: quiet for OUTBOX_QUIET_SECONDS and, when beat
    sent this run, published before beat sent it.

    The queue is first in, first out, and the relay's message waits in it behind the classify work: a
    message published before it has been taken off the queue by the time the relay runs. So what the relay
    sends again lost its message, failed its run, is being worked on or retried, or was put back at the end
    of the queue after its worker was lost (copies there are harmless: each run decides a comment once);
    not what is still waiting in a backlog, which would otherwise be sent again each quiet time and taken
    out of the batches.
    """
    cutoff = now - quiet
    sent = beat_send_time(getattr(request, "expires", None))
    return cutoff if sent is None else min(cutoff, sent - SEND_MARGIN)


def beat_send_time(expires: object) -> datetime | None:
    """When beat sent the message: Celery sets its expiry then, RELAY_EXPIRES ahead (None when not sent so,
    e.g. the task run in-process)."""
    if isinstance(expires, str):
        try:
            expires = datetime.fromisoformat(expires)
        except ValueError:
            return None
    if not isinstance(expires, datetime) or expires.tzinfo is None:
        return None
    return expires - timedelta(seconds=RELAY_EXPIRES)


@shared_task(name=RETRY_CALLBACKS_TASK, bind=True, soft_time_limit=60, time_limit=90, expires=30)
def retry_due_callbacks(self: Task) -> int:
    runtime = _runtime(self)
    with runtime.sessions.begin() as session:
        now = datetime.now(UTC)
        callbacks.release_held_back(session, now)
        due = callbacks.due_deliveries(session, now)
    chunks = [due[start : start + NOTIFY_CHUNK] for start in range(0, len(due), NOTIFY_CHUNK)]
    published = _publish_each(list(enumerate(chunks)), CeleryPublisher(self.app).notify_many)
    count = sum(len(chunks[number]) for number in published)
    if count:
        log.info("due callbacks published", extra={"count": count})
    return count


def _publish_each(items: list[tuple[int, Any]], publish: Callable[[Any], object]) -> list[int]:
    """Call ``publish(argument)`` for each ``(key, argument)`` and return the keys published, in order;
    stop at the first broker failure (the rest wait for the next beat)."""
    done = []
    for row_id, argument in items:
        try:
            publish(argument)
        except Exception:
            log.warning("broker unavailable; will try again on the next beat", exc_info=True)
            break
        done.append(row_id)
    return done


@shared_task(name=PURGE_RECEIPTS_TASK, bind=True, soft_time_limit=300, time_limit=330, expires=600)
def purge_old_receipts(self: Task) -> int:
    runtime = _runtime(self)
    with runtime.sessions.begin() as session:
        return purge_receipts(session, datetime.now(UTC) - RECEIPT_RETENTION)


@shared_task(name=RETENTION_TASK, bind=True, soft_time_limit=1800, time_limit=1830, expires=1800)
def apply_retention_limits(self: Task, personal_days: int = 30, closed_days: int = 365) -> dict[str, int]:
    """Forget personal data past its retention (RETAIN_PERSONAL_DAYS, RETAIN_CLOSED_DAYS); 0 days keeps it."""
    runtime = _runtime(self)
    # Batches commit one by one within a time budget, so the soft time limit never rolls work back.
    done = apply_retention(runtime.sessions, datetime.now(UTC), personal_days, closed_days)
    result = {
        "network_cleared": done.network_cleared,
        "closed_anonymized": done.closed_anonymized,
        "networks_mended": done.networks_mended,
        "search_mended": done.search_mended,
    }
    log.info("retention applied", extra=result)
    return result


# Under the broker's visibility timeout (an hour): Redis hands a task not acknowledged by then to another
# worker, so a longer retrain would run twice. Training takes minutes; 50 minutes is far past that.
@shared_task(name=RETRAIN_TASK, bind=True, soft_time_limit=50 * 60, time_limit=55 * 60, expires=3600)
def retrain_model(self: Task) -> str:
    """Scheduled retraining with the moderators' labels; the new version is activated only if not worse."""
    runtime = _runtime(self)
    result = retrain(runtime.sessions, runtime.model_dir, runtime.data_dir)
    log.info(
        "retrained", extra={"model_version": result.version, "activated": result.activated, "problems": result.problems}
    )
    return result.version if result.activated else f"{result.version} (kept inactive)"
