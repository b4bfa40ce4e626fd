"""Prometheus metrics the service records. In multi-process mode (PROMETHEUS_MULTIPROC_DIR, set by the
`moderation` entry point) every gunicorn and Celery process writes here and `/metrics` adds them up."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from models.entities import Outcome
from moderation.reasons import Reason

INTAKE_REQUESTS = Counter("moderation_intake_requests_total", "Webhook requests by HTTP status.", ["status"])
INTAKE_SECONDS = Histogram(
    "moderation_intake_seconds",
    "Webhook handling time.",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DECISIONS = Counter("moderation_decisions_total", "Decisions by outcome and by who decided.", ["outcome", "decided_by"])
DECISION_REASONS = Counter(
    "moderation_decision_reasons_total", "Reasons the policy gave with the model's decisions.", ["reason"]
)
CLASSIFY_SECONDS = Histogram(
    "moderation_classify_seconds",
    "Time to classify and decide one comment: a batch's time shared among the comments it decided.",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
END_TO_END_SECONDS = Histogram(
    "moderation_end_to_end_seconds",
    "From intake of the comment (or of its edit) to stored decision.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CALLBACK_ATTEMPTS = Counter("moderation_callback_attempts_total", "Callback attempts by result.", ["result"])
OUTBOX_RELAYED = Counter("moderation_outbox_relayed_total", "Tasks republished by the outbox relay.")
MODEL_UNAVAILABLE = Counter(
    "moderation_model_unavailable_total",
    "Classify tasks put off because no model could be loaded (none active, file missing or altered).",
)


def _start_at_zero() -> None:
    """The series alerts and dashboards watch exist from the start, at 0: Prometheus's ``increase()`` and
    ``rate()`` cannot see the first event of a series that only appears with it (the first 503s of an outage)."""
    for status in ("202", "429", "503"):
        INTAKE_REQUESTS.labels(status=status)
    for outcome in Outcome:
        DECISIONS.labels(outcome=outcome.value, decided_by="model")
        DECISIONS.labels(outcome=outcome.value, decided_by="moderator")
    for reason in Reason:
        DECISION_REASONS.labels(reason=reason.value)
    CALLBACK_ATTEMPTS.labels(result="delivered")


_start_at_zero()


def record_decision(outcome: str, reasons: list[str], decided_by: str = "model") -> None:
    DECISIONS.labels(outcome=outcome, decided_by=decided_by).inc()
    for reason in reasons:
        DECISION_REASONS.labels(reason=reason).inc()


def record_moderator_decision(outcome: str) -> None:
    """A moderator's verdict, once committed. Its reasons are not counted: an undo restores the model's
    reasons (``not_classified`` among them, which the runbook alerts on), and a moderator's own reasons would
    blur the policy's rates, which that counter, having no ``decided_by``, cannot tell apart."""
    DECISIONS.labels(outcome=outcome, decided_by="moderator").inc()
