"""The invariant every fault test ends with (DESIGN sections 2 and 8).

Every comment accepted with a 2xx has exactly one current decision; every decision was told to the site
once per change (one message id, received at least once: the site drops repeats by ``webhook-id``) or is
a visible dead letter; the site never heard of a comment without a decision, and never heard "approved"
for a comment the model held or rejected (unless a moderator approved it later).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from models.entities import CallbackDelivery, Comment, Decision, DeliveryStatus, OutboxMessage, Site
from tests.support.site_server import SiteServer

# A callback row in one of these states is finished: told, or visibly not told (an operator sees it).
FINAL_STATUSES = {DeliveryStatus.DELIVERED, DeliveryStatus.DEAD, DeliveryStatus.DISABLED}


@dataclass
class Snapshot:
    """What the database holds for a set of comments, read in one go."""

    comments: dict[int, Any] = field(default_factory=dict)
    decisions: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    deliveries: dict[int, Any] = field(default_factory=dict)  # by decision id
    deliveries_by_message: dict[str, Any] = field(default_factory=dict)
    outbox: Counter[int] = field(default_factory=Counter)
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
    return found


def settled(engine: Engine, accepted_comment_ids: Collection[int], site_servers: Iterable[SiteServer] = ()) -> bool:
    """True once every accepted comment is decided, every callback row is final and each delivered
    message has reached the site: the moment to call ``check_invariants`` (poll it with wait_until)."""
    state = snapshot(engine, accepted_comment_ids)
    for comment_id in accepted_comment_ids:
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
        if len(current) != 1:
            problems.append(f"comment {comment_id} has {len(current)} current decisions (of {len(decisions)})")
            continue
        expected_status = {"approve": "approved", "hold": "held", "reject": "rejected"}[current[0].outcome]
        if state.comments[comment_id].status != expected_status:
            problems.append(
                f"comment {comment_id} status {state.comments[comment_id].status!r} "
                f"but its current decision is {current[0].outcome!r}"
            )
        if state.outbox[comment_id]:
            problems.append(f"comment {comment_id} is decided but still has {state.outbox[comment_id]} outbox row(s)")

    # 2. One callback row per decision (for sites with a callback URL), each final.
    for comment_id, decisions in state.decisions.items():
        comment = state.comments[comment_id]
        for decision in decisions:
            delivery = state.deliveries.get(decision.id)
            if delivery is None:
                if state.site_has_callback.get(comment.site_id):
                    problems.append(f"decision {decision.id} of comment {comment_id} has no callback row")
                continue
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
    model_outcome = {
        cid: next((d.outcome for d in ds if d.decided_by == "model"), None) for cid, ds in state.decisions.items()
    }
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
        # Nothing published that should not be: "approved" only if the model approved or a moderator did.
        if data.get("status") == "approved":
            moderator_approved = (
                decision is not None and decision.outcome == "approve" and decision.decided_by != "model"
            )
            if model_outcome.get(comment_id) != "approve" and not moderator_approved:
                decided = model_outcome.get(comment_id)
                problems.append(f"comment {comment_id} was reported approved, but the model decided {decided!r}")
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
