"""The invariant every fault test ends with (DESIGN sections 2 and 8).

Every comment accepted with a 2xx has exactly one current decision (a comment the site deleted has at
most one, and no work or callback left); every decision was told to the site once per change (one message
id, received at least once: the site drops repeats by ``webhook-id``) or is a visible dead letter, or was
withdrawn (cancelled) because an edit or a deletion made it untrue (never the current decision of a comment
still there), an edit's decision too when the outcome stayed (intake answered "pending" for it);
no callback is recorded delivered after the site deleted the comment; the site never heard of a comment
without a decision, and every message's status matches the decision it describes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from models.entities import CallbackDelivery, Comment, Decision, DeliveryStatus, OutboxMessage, Site, WebhookReceipt
from tests.support.site_server import SiteServer

# A callback row in one of these states is finished: told, or visibly not told (an operator sees it).
# CANCELLED is final only where the callback had become untrue (check_invariants checks which).
FINAL_STATUSES = {DeliveryStatus.DELIVERED, DeliveryStatus.DEAD, DeliveryStatus.DISABLED, DeliveryStatus.CANCELLED}
STATUS_OF_OUTCOME = {"approve": "approved", "hold": "held", "reject": "rejected"}


@dataclass
class Snapshot:
    """What the database holds for a set of comments, read in one go."""

    comments: dict[int, Any] = field(default_factory=dict)
    decisions: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    deliveries: dict[int, Any] = field(default_factory=dict)  # by decision id
    deliveries_by_message: dict[str, Any] = field(default_factory=dict)
    outbox: Counter[int] = field(default_factory=Counter)
    last_event_at: dict[int, Any] = field(default_factory=dict)  # the site's latest webhook for the comment
    site_has_callback: dict[int, bool] = field(default_factory=dict)
    all_comment_ids: set[int] = field(default_factory=set)


def snapshot(engine: Engine, comment_ids: Collection[int]) -> Snapshot:
    found = Snapshot()
    ids = list(comment_ids)
    with engine.connect() as connection:
        found.all_comment_ids = set(connection.scalars(select(Comment.id)))
        found.site_has_callback = {
            row.id: bool(row.callback_url) for row in connection.execute(select(Site.id, Site.callback_url))
        }
        if not ids:
            return found
        for comment in connection.execute(select(Comment).where(Comment.id.in_(ids))):
            found.comments[comment.id] = comment
        for decision in connection.execute(select(Decision).where(Decision.comment_id.in_(ids)).order_by(Decision.id)):
            found.decisions[decision.comment_id].append(decision)
        for delivery in connection.execute(select(CallbackDelivery).where(CallbackDelivery.comment_id.in_(ids))):
            found.deliveries[delivery.decision_id] = delivery
            found.deliveries_by_message[delivery.message_id] = delivery
        for comment_id in connection.scalars(select(OutboxMessage.comment_id).where(OutboxMessage.comment_id.in_(ids))):
            found.outbox[comment_id] += 1
        latest = select(WebhookReceipt.comment_id, func.max(WebhookReceipt.received_at)).group_by(
            WebhookReceipt.comment_id
        )
        for comment_id, received_at in connection.execute(latest.where(WebhookReceipt.comment_id.in_(ids))):
            found.last_event_at[comment_id] = received_at
    return found


def _deleted_problems(state: Snapshot, comment_id: int, current: list[Any]) -> list[str]:
    """A deleted comment: at most one current decision, no work left, no callback that may still go out."""
    problems = []
    if len(current) > 1:
        problems.append(f"deleted comment {comment_id} has {len(current)} current decisions")
    if state.outbox[comment_id]:
        problems.append(f"deleted comment {comment_id} still has {state.outbox[comment_id]} outbox row(s)")
    # The delete (or an ignored event after it) is the site's last event: no callback may be recorded as
    # delivered after it (one on the wire then may land, but it stays cancelled).
    deleted_known_by = _utc(state.last_event_at.get(comment_id))
    for delivery in state.deliveries.values():
        if delivery.comment_id != comment_id:
            continue
        if delivery.status in {DeliveryStatus.PENDING, DeliveryStatus.SENDING}:
            problems.append(f"deleted comment {comment_id} still has callback {delivery.id} {delivery.status!r}")
        delivered_at = _utc(delivery.delivered_at)
        if delivered_at is not None and deleted_known_by is not None and delivered_at > deleted_known_by:
            problems.append(f"callback {delivery.id} was delivered after comment {comment_id} was deleted")
    return problems


def _utc(moment: datetime | None) -> datetime | None:
    """Rows read through Core on SQLite come back naive (they are UTC)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def settled(engine: Engine, accepted_comment_ids: Collection[int], site_servers: Iterable[SiteServer] = ()) -> bool:
    """True once every accepted comment is decided, every callback row is final and each delivered
    message has reached the site: the moment to call ``check_invariants`` (poll it with wait_until)."""
    state = snapshot(engine, accepted_comment_ids)
    for comment_id in accepted_comment_ids:
        comment = state.comments.get(comment_id)
        if comment is not None and comment.status == "deleted":
            continue
        if not any(d.is_current for d in state.decisions.get(comment_id, [])):
            return False
    if any(d.status not in FINAL_STATUSES for d in state.deliveries.values()):
        return False
    received = {r.headers.get("webhook-id") for server in site_servers for r in list(server.received)}
    return all(d.message_id in received for d in state.deliveries.values() if d.status == DeliveryStatus.DELIVERED)


def _servers(site_server: SiteServer | Iterable[SiteServer] | None) -> list[SiteServer]:
    if site_server is None:
        return []
    if isinstance(site_server, SiteServer):
        return [site_server]
    return list(site_server)


def check_invariants(
    engine: Engine,
    accepted_comment_ids: Collection[int],
    site_server: SiteServer | Iterable[SiteServer] | None,
    *,
    only_accepted_stored: bool = True,
) -> dict[str, Any]:
    """Assert the invariant; return a small summary (counts) for the test's report.

    ``accepted_comment_ids`` are the service's ids from the 202/200 answers. With ``only_accepted_stored``
    the database must hold no other comment (a request answered 4xx/5xx stored nothing).
    """
    accepted = set(accepted_comment_ids)
    servers = _servers(site_server)
    state = snapshot(engine, accepted)
    problems: list[str] = []

    missing = accepted - set(state.comments)
    if missing:
        problems.append(f"accepted comments lost (not in the database): {sorted(missing)}")
    if only_accepted_stored and state.all_comment_ids - accepted:
        problems.append(
            f"comments stored that were never accepted with a 2xx: {sorted(state.all_comment_ids - accepted)}"
        )

    # 1. Exactly one current decision per accepted comment, agreeing with the comment's status.
    for comment_id in sorted(accepted & set(state.comments)):
        decisions = state.decisions.get(comment_id, [])
        current = [d for d in decisions if d.is_current]
        if state.comments[comment_id].status == "deleted":
            problems += _deleted_problems(state, comment_id, current)
            continue
        if len(current) != 1:
            problems.append(f"comment {comment_id} has {len(current)} current decisions (of {len(decisions)})")
            continue
        expected_status = STATUS_OF_OUTCOME[current[0].outcome]
        if state.comments[comment_id].status != expected_status:
            problems.append(
                f"comment {comment_id} status {state.comments[comment_id].status!r} "
                f"but its current decision is {current[0].outcome!r}"
            )
        if state.outbox[comment_id]:
            problems.append(f"comment {comment_id} is decided but still has {state.outbox[comment_id]} outbox row(s)")

    # 2. One callback row per decision (for sites with a callback URL), each final. Cancelled only where it
    # had become untrue: a decision no longer current, or a deleted comment.
    for comment_id, decisions in state.decisions.items():
        comment = state.comments[comment_id]
        for decision in decisions:
            delivery = state.deliveries.get(decision.id)
            if delivery is None:
                if state.site_has_callback.get(comment.site_id):
                    problems.append(f"decision {decision.id} of comment {comment_id} has no callback row")
                continue
            if delivery.status == DeliveryStatus.CANCELLED and decision.is_current and comment.status != "deleted":
                problems.append(
                    f"callback {delivery.id} of the current decision {decision.id} was cancelled: "
                    f"the site was never told the current outcome of comment {comment_id}"
                )
            if delivery.status not in FINAL_STATUSES:
                problems.append(
                    f"callback {delivery.id} (decision {decision.id}) is still {delivery.status!r} "
                    f"after {delivery.attempts} attempts"
                )
            if delivery.payload["data"]["id"] != comment_id or delivery.payload["data"]["decision"] != decision.outcome:
                problems.append(f"callback {delivery.id} payload does not describe decision {decision.id}")

    # 3. What the site received, grouped by webhook-id.
    received = [r for server in servers for r in list(server.received)]
    by_message: dict[str, list[Any]] = defaultdict(list)
    for item in received:
        by_message[item.headers.get("webhook-id", "")].append(item)
    unverified = [mid for mid, items in by_message.items() if not all(i.verified for i in items)]
    if unverified:
        problems.append(f"callbacks whose signature did not verify: {unverified}")
    messages_per_decision: dict[int, set[str]] = defaultdict(set)
    decision_by_id = {d.id: d for ds in state.decisions.values() for d in ds}
    for message_id, items in by_message.items():
        bodies = {i.body for i in items}
        if len(bodies) != 1:
            problems.append(f"message {message_id} was sent with {len(bodies)} different bodies")
        event = items[0].event
        data = event.get("data", {})
        comment_id = data.get("id")
        if comment_id in accepted and not state.decisions.get(comment_id):
            problems.append(f"the site was told about comment {comment_id}, which has no decision")
        delivery = state.deliveries_by_message.get(message_id)
        if delivery is None:
            if comment_id in accepted:
                problems.append(f"the site received message {message_id} that no callback row records")
            continue
        messages_per_decision[delivery.decision_id].add(message_id)
        decision = decision_by_id.get(delivery.decision_id)
        if decision is not None and data.get("decision") != decision.outcome:
            problems.append(f"message {message_id} says {data.get('decision')!r}, the decision is {decision.outcome!r}")
        # Nothing published that should not be: the status the site reads (and publishes on) must be the one
        # the described decision gives; "approved" with a hold or reject would publish a held comment.
        if data.get("status") != STATUS_OF_OUTCOME.get(str(data.get("decision"))):
            problems.append(
                f"message {message_id} for comment {comment_id} says status {data.get('status')!r} "
                f"with decision {data.get('decision')!r}"
            )
    for decision_id, message_ids in messages_per_decision.items():
        if len(message_ids) > 1:
            problems.append(f"decision {decision_id} was told to the site under {len(message_ids)} message ids")
    if servers:
        for delivery in state.deliveries.values():
            if delivery.status == DeliveryStatus.DELIVERED and delivery.message_id not in by_message:
                problems.append(f"callback {delivery.id} is marked delivered but the site never received it")

    assert not problems, "invariant violated:\n  " + "\n  ".join(problems[:50])
    return {
        "comments": len(accepted),
        "decisions": sum(len(ds) for ds in state.decisions.values()),
        "deliveries": dict(Counter(d.status for d in state.deliveries.values())),
        "messages_received": len(by_message),
        "posts_received": len(received),
        "repeated_messages": sum(1 for items in by_message.values() if len(items) > 1),
    }
