"""Fault tests (DESIGN sections 2 and 8) with real processes, real Redis and real databases, each bounded in
time and each ending with the same invariant check (tests/support/invariants.py)."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from models.db import create_db_engine, make_session_factory
from models.migrate import upgrade_database
from moderation import registry
from server.factory import create_app
from server.settings import Settings
from tests.conftest import SiteCredentials, TrainedModel, fast_settings
from tests.support.faults import (
    add_site,
    allow_connections,
    comment_count,
    comment_text,
    database_name,
    decided_ids,
    deliveries_for,
    post_comment,
    prepared,
    queued,
    refuse_connections,
    send_concurrently,
    site_row,
    unacked_classify,
)
from tests.support.invariants import check_invariants, settled
from tests.support.netns import NetworkNamespace, netns_unavailable_reason, network_namespace_of
from tests.support.processes import ServiceProcess, Stack, service_env, wait_until
from tests.support.services import BundledRedis, free_port, fresh_postgres_database, postgres_reachable
from tests.support.signing import comment_event, encode, signed_headers
from tests.support.site_server import SiteServer, always

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# Generous bounds: two cores shared with other heavy jobs.
SETTLE_TIMEOUT = 180
SITE = "backpain-advisor"


def unlimited(settings: Settings, **update: object) -> Settings:
    """The test settings without rate limits in the way (fault tests post many comments quickly)."""
    return settings.model_copy(
        update={"rate_limit_per_site": "100000/minute", "rate_limit_per_author_ip": "100000/minute", **update}
    )


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[list[Stack]]:
    """Stacks a test starts; all stopped at the end, in reverse order."""
    started: list[Stack] = []
    yield started
    for stack in reversed(started):
        stack.stop_all()


@pytest.fixture
def site_servers() -> Iterator[list[SiteServer]]:
    servers: list[SiteServer] = []
    yield servers
    for server in servers:
        server.stop()


def new_stack(stacks: list[Stack], settings: Settings, log_dir: Path) -> Stack:
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(settings, log_dir)
    stacks.append(stack)
    return stack


def settle(engine: Engine, ids: list[int], servers: list[SiteServer], stack: Stack) -> None:
    try:
        wait_until(lambda: settled(engine, ids, servers), timeout=SETTLE_TIMEOUT, what="every comment decided and told")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{stack.logs()}") from None


def accept_all(responses: list[httpx.Response]) -> list[int]:
    assert all(r.status_code in (200, 202) for r in responses), [(r.status_code, r.text) for r in responses]
    return [r.json()["id"] for r in responses]


# --- a worker killed mid-task --------------------------------------------------------------------


def test_worker_killed_mid_task_loses_nothing(
    settings: Settings,
    engine: Engine,
    active_model: TrainedModel,
    redis_url: str,
    stacks: list[Stack],
    site_servers: list[SiteServer],
    tmp_path: Path,
) -> None:
    site = add_site(engine, SITE)
    site_servers.append(site)
    # Batches of 4: several tasks decide the 30 comments, each taking the comments waiting besides its own.
    stack = new_stack(stacks, unlimited(settings, classify_batch_size=4), tmp_path / "logs")
    _, base = stack.web()
    first = stack.worker("worker-1", hostname="first@%h")

    ids = accept_all(
        [post_comment(base, SITE, site.secret, f"c-{n}", comment_text(n, long=True), number=n) for n in range(30)]
    )

    # Catch the worker mid-task: it holds a classify task (taken from the queue, not yet acknowledged), has
    # decided some comments and not others. Its task's own comment may already be decided by an earlier
    # batch; the comments its open transaction holds go back to waiting when the kill rolls it back.
    def mid_task() -> bool:
        decided = decided_ids(engine, ids)
        return 0 < len(decided) < len(ids) - 3 and bool(unacked_classify(redis_url))

    wait_until(mid_task, timeout=120, interval=0.05, what="the worker mid-task", proc=first)
    first.kill_hard()
    held_at_kill = set(unacked_classify(redis_url)) - decided_ids(engine, ids)
    decided_at_kill = decided_ids(engine, ids)
    assert not first.alive()

    # A new worker takes what is still queued; the killed worker's unacknowledged task stays in Redis's
    # "unacked" hash until the visibility timeout (an hour), so it does not come back from the broker...
    stack.worker("worker-2", hostname="second@%h")
    wait_until(
        lambda: queued(redis_url) == 0 and decided_ids(engine, ids) >= set(ids) - held_at_kill,
        timeout=SETTLE_TIMEOUT,
        what="the second worker to drain the queue",
    )
    held_still_undecided = held_at_kill - decided_ids(engine, ids)
    assert set(unacked_classify(redis_url)) >= held_still_undecided  # still parked by the broker

    # ...but the outbox relay (beat) publishes undecided comments again after OUTBOX_QUIET_SECONDS.
    stack.beat()
    settle(engine, ids, [site], stack)
    summary = check_invariants(engine, ids, site)
    assert summary["decisions"] == len(ids)  # one decision each: duplicates lost cleanly
    print(
        f"kill -9: decided before kill {len(decided_at_kill)}, held by the killed worker {sorted(held_at_kill)}, "
        f"undecided until beat's relay ran {sorted(held_still_undecided)}; {summary}"
    )


# --- Redis stopped while comments keep arriving --------------------------------------------------


def test_redis_down_intake_still_accepts_and_the_outbox_catches_up(
    settings: Settings,
    engine: Engine,
    active_model: TrainedModel,
    stacks: list[Stack],
    site_servers: list[SiteServer],
    tmp_path: Path,
) -> None:
    bundled = BundledRedis().start()
    try:
        site = add_site(engine, SITE)
        site_servers.append(site)
        stack = new_stack(stacks, unlimited(settings, redis_url=bundled.url), tmp_path / "logs")
        _, base = stack.web()
        stack.worker()
        stack.beat()

        before = accept_all(
            [post_comment(base, SITE, site.secret, f"c-{n}", comment_text(n), number=n) for n in range(5)]
        )

        bundled.stop()
        during: list[int] = []
        slowest = 0.0
        for n in range(5, 13):  # quick: publishing fails fast while Redis is down
            started = time.monotonic()
            response = post_comment(base, SITE, site.secret, f"c-{n}", comment_text(n), number=n)
            slowest = max(slowest, time.monotonic() - started)
            assert response.status_code == 202, response.text  # the outbox holds it
            during.append(response.json()["id"])
        assert slowest < 15, f"intake took {slowest:.1f} s with Redis down"
        # Nothing from the outage is decided yet (the broker never got it).
        assert not decided_ids(engine, during)

        bundled.start()  # same port, same append-only file
        ids = before + during
        settle(engine, ids, [site], stack)
        summary = check_invariants(engine, ids, site)
        assert summary["decisions"] == len(ids)
        print(f"redis down: slowest intake {slowest:.2f} s; {summary}")
    finally:
        for stack in stacks:
            stack.stop_all()
        bundled.remove()


# --- the database unavailable --------------------------------------------------------------------


def test_database_unavailable_is_503_and_recovers_by_itself(
    redis_url: str,
    trained_model: TrainedModel,
    stacks: list[Stack],
    site_servers: list[SiteServer],
    tmp_path: Path,
) -> None:
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with fresh_postgres_database() as url:
        upgrade_database(url)
        name = database_name(url)
        engine = create_db_engine(url)
        try:
            with make_session_factory(engine).begin() as session:
                registry.register(session, trained_model.version, trained_model.artifact, trained_model.model.card)
                registry.activate(session, trained_model.version)
            site = add_site(engine, SITE)
            site_servers.append(site)
            settings = unlimited(fast_settings(url, redis_url, tmp_path / "var"))
            stack = new_stack(stacks, settings, tmp_path / "logs")
            web, base = stack.web()
            stack.worker()
            stack.beat()

            before = accept_all(
                [post_comment(base, SITE, site.secret, f"c-{n}", comment_text(n), number=n) for n in range(3)]
            )
            engine.dispose()  # the test's own pool must not hold sessions either
            ended = refuse_connections(name)
            try:
                retried = [prepared(SITE, site.secret, f"c-{n}", comment_text(n), number=n) for n in range(3, 8)]
                for delivery in [*retried, prepared(SITE, site.secret, "c-0", comment_text(0), number=0)]:
                    answer = delivery.send(base)
                    assert answer.status_code == 503, answer.text  # never 500
                    assert answer.headers.get("Retry-After")
                    assert answer.json()["error"] == "unavailable"
                assert httpx.get(f"{base}/readyz", timeout=30).status_code == 503
                assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
            finally:
                allow_connections(name)

            # The site retries the very same deliveries; the web process recovers without a restart.
            first_retry: list[httpx.Response] = []

            def accepted_again() -> bool:
                response = retried[0].send(base)
                assert response.status_code in (202, 503), response.text
                if response.status_code == 202:
                    first_retry.append(response)
                return response.status_code == 202

            wait_until(accepted_again, timeout=60, interval=0.5, what="intake to recover", proc=web)
            rest = accept_all([delivery.send(base) for delivery in retried[1:]])
            ids = [*before, first_retry[0].json()["id"], *rest]
            settle(engine, ids, [site], stack)
            summary = check_invariants(engine, ids, site)  # the 503s stored nothing
            assert summary["decisions"] == len(ids)
            print(f"database down: {ended} sessions ended; {summary}")
        finally:
            for stack in stacks:
                stack.stop_all()
            allow_connections(name)
            engine.dispose()


# --- the site's callback endpoint fails ----------------------------------------------------------


def test_failing_callback_endpoints_retry_disable_and_dead_letter(
    settings: Settings,
    engine: Engine,
    active_model: TrainedModel,
    stacks: list[Stack],
    site_servers: list[SiteServer],
    tmp_path: Path,
) -> None:
    def retry_after_once(attempt: int) -> tuple[int, dict[str, str]]:
        return (429, {"Retry-After": "2"}) if attempt == 1 else (204, {})

    failing = add_site(engine, "answers-500", always(500))
    throttled = add_site(engine, "answers-429", retry_after_once)
    gone = add_site(engine, "answers-410", always(410))
    hanging = add_site(engine, "hangs", lambda _attempt: None)
    site_servers.extend([failing, throttled, gone, hanging])
    stack = new_stack(
        stacks, unlimited(settings, callback_max_attempts=3, callback_timeout_seconds=1), tmp_path / "logs"
    )
    _, base = stack.web()
    stack.worker(concurrency=2)
    stack.beat()

    def send(server: SiteServer, name: str, external: str, number: int) -> int:
        answer = post_comment(base, name, server.secret, external, comment_text(number), number=number)
        assert answer.status_code == 202, answer.text
        return int(answer.json()["id"])

    ids = {
        "500": send(failing, "answers-500", "c-500", 0),
        "429": send(throttled, "answers-429", "c-429", 3),
        "410": send(gone, "answers-410", "c-410", 6),
        "hang": send(hanging, "hangs", "c-hang", 9),
    }

    # 410: the site's callbacks are switched off; a later comment's callback is never attempted.
    wait_until(lambda: site_row(engine, "answers-410").callback_disabled_at is not None, timeout=120, what="410")
    ids["410-later"] = send(gone, "answers-410", "c-410-later", 12)
    all_ids = list(ids.values())
    settle(engine, all_ids, site_servers, stack)

    # 500: three attempts with backoff, then a dead letter.
    (dead,) = deliveries_for(engine, ids["500"])
    assert (dead.status, dead.attempts, dead.last_status_code) == ("dead", 3, 500)
    assert [r.headers["webhook-id"] for r in failing.received] == [dead.message_id] * 3

    # 429 with Retry-After: 2: no second attempt sooner than two seconds, then delivered.
    (throttled_row,) = deliveries_for(engine, ids["429"])
    assert (throttled_row.status, throttled_row.attempts) == ("delivered", 2)
    first, second = throttled.times_of(throttled_row.message_id)
    assert second - first >= 1.9, f"second attempt after {second - first:.2f} s despite Retry-After: 2"
    assert throttled_row.next_attempt_at - throttled_row.created_at >= timedelta(seconds=2)

    # 410: one attempt; the site is disabled; the later comment's callback is a visible disabled row.
    (gone_row,) = deliveries_for(engine, ids["410"])
    (later_row,) = deliveries_for(engine, ids["410-later"])
    assert (gone_row.status, gone_row.attempts, gone_row.last_status_code) == ("disabled", 1, 410)
    assert (later_row.status, later_row.attempts) == ("disabled", 0)
    observe_until = time.monotonic() + 3  # six beat retry intervals: nothing more may be sent
    while time.monotonic() < observe_until:
        assert len(gone.received) == 1, "a disabled endpoint got another callback"
        time.sleep(0.25)

    # A hanging endpoint: each attempt times out after CALLBACK_TIMEOUT_SECONDS, then a dead letter.
    (hung,) = deliveries_for(engine, ids["hang"])
    assert (hung.status, hung.attempts, hung.last_status_code) == ("dead", 3, None)
    assert "Timeout" in (hung.last_error or "")
    assert [r.headers["webhook-id"] for r in hanging.received] == [hung.message_id] * 3

    summary = check_invariants(engine, all_ids, site_servers)
    print(f"callbacks: {summary}")


# --- duplicate, replayed and concurrent deliveries -----------------------------------------------


def test_duplicate_replayed_and_concurrent_deliveries_store_one_comment(
    settings: Settings,
    engine: Engine,
    active_model: TrainedModel,
    stacks: list[Stack],
    site_servers: list[SiteServer],
    tmp_path: Path,
) -> None:
    site = add_site(engine, SITE)
    site_servers.append(site)
    stack = new_stack(stacks, unlimited(settings), tmp_path / "logs")
    _, base = stack.web()
    stack.worker()
    stack.beat()

    # The same delivery twice (a site retry after a lost answer), then under a new webhook-id.
    original = prepared(SITE, site.secret, "c-dup", comment_text(0), number=0)
    first, again = original.send(base), original.send(base)
    renamed = prepared(SITE, site.secret, "c-dup", comment_text(0), number=0).send(base)
    assert (first.status_code, again.status_code, renamed.status_code) == (202, 200, 200)
    assert first.json()["id"] == again.json()["id"] == renamed.json()["id"]

    # Eight clients at once with one comment: half replaying one webhook-id, half with their own.
    shared = prepared(SITE, site.secret, "c-race", comment_text(1), number=1)
    racing = [shared] * 4 + [prepared(SITE, site.secret, "c-race", comment_text(1), number=1) for _ in range(4)]
    answers = send_concurrently(racing, base)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 7 + [202], [(a.status_code, a.text) for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1

    # Eight different comments at once, each sent twice concurrently.
    pairs = [prepared(SITE, site.secret, f"c-pair-{n}", comment_text(n), number=n) for n in range(2, 10)]
    answers_pairs = send_concurrently(pairs + pairs, base)
    by_id: dict[int, list[int]] = {}
    for answer in answers_pairs:
        assert answer.status_code in (200, 202), answer.text
        by_id.setdefault(answer.json()["id"], []).append(answer.status_code)
    assert len(by_id) == 8 and all(sorted(codes) == [200, 202] for codes in by_id.values()), by_id

    ids = [first.json()["id"], answers[0].json()["id"], *by_id]
    assert comment_count(engine) == len(ids)
    settle(engine, ids, [site], stack)

    # A replay after the decision answers 200 with the current status; a stale replay is refused.
    replay = original.send(base)
    assert replay.status_code == 200 and replay.json()["status"] != "pending", replay.text
    raw, headers = original.request
    stale = dict(headers, **{"webhook-timestamp": str(int(headers["webhook-timestamp"]) - 600)})
    assert httpx.post(f"{base}/webhooks/comments", content=raw, headers=stale, timeout=30).status_code == 401

    summary = check_invariants(engine, ids, site)
    assert summary["decisions"] == len(ids)
    print(f"duplicates: {summary}")


# --- two worker hosts on one queue ---------------------------------------------------------------


def test_two_worker_hosts_decide_each_comment_once(
    settings: Settings,
    engine: Engine,
    active_model: TrainedModel,
    stacks: list[Stack],
    site_servers: list[SiteServer],
    tmp_path: Path,
) -> None:
    site = add_site(engine, SITE)
    site_servers.append(site)
    stack = new_stack(stacks, unlimited(settings), tmp_path / "logs")
    _, base = stack.web()
    hosts = [stack.worker("worker-a", hostname="alpha@host-a"), stack.worker("worker-b", hostname="beta@host-b")]
    for proc in hosts:
        wait_until(functools.partial(_ready, proc), timeout=120, what=f"{proc.name} ready", proc=proc)
    stack.beat()

    ids = accept_all([post_comment(base, SITE, site.secret, f"c-{n}", comment_text(n), number=n) for n in range(30)])
    settle(engine, ids, [site], stack)
    summary = check_invariants(engine, ids, site)
    assert summary["decisions"] == len(ids)

    decided_by_host = {proc.name: _decided_in_log(proc.log()) for proc in hosts}
    assert sum(decided_by_host.values()) == len(ids), decided_by_host
    print(f"two hosts: decided per worker {decided_by_host}; {summary}")


def _ready(proc: ServiceProcess) -> bool:
    return " ready." in proc.log()


def _decided_in_log(log: str) -> int:
    count = 0
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("message") == "comment decided":
            count += 1
    return count


def test_two_worker_hosts_in_separate_network_namespaces_decide_each_comment_once(
    settings: Settings,
    engine: Engine,
    active_model: TrainedModel,
    redis_url: str,
    stacks: list[Stack],
    site_servers: list[SiteServer],
    tmp_path: Path,
) -> None:
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    site = add_site(engine, SITE)
    site_servers.append(site)
    stack = new_stack(stacks, unlimited(settings), tmp_path / "logs")
    ports = [make_url(redis_url).port or 6379, site.port]
    if engine.dialect.name == "postgresql":
        ports.append(make_url(settings.effective_database_url).port or 5432)
    namespace = NetworkNamespace(ports).start()
    try:
        _, base = stack.web()
        here = stack.worker("worker-a", hostname="alpha@host-a")
        argv = namespace.exec_argv(
            [sys.executable, "-m", "server", "worker", "--concurrency", "1", "--hostname", "beta@host-b"]
        )
        there = ServiceProcess("worker-b", argv, service_env(stack.settings), stack.log_dir / "worker-b.log").start()
        stack.processes.append(there)
        for proc in (here, there):
            wait_until(functools.partial(_ready, proc), timeout=120, what=f"{proc.name} ready", proc=proc)
        # `ip netns exec` joined the namespace, then exec'd the worker (same pid): it is on the other host.
        assert network_namespace_of(there.pid) != network_namespace_of(os.getpid())
        stack.beat()

        ids = accept_all(
            [post_comment(base, SITE, site.secret, f"c-{n}", comment_text(n), number=n) for n in range(30)]
        )
        settle(engine, ids, [site], stack)
        summary = check_invariants(engine, ids, site)
        assert summary["decisions"] == len(ids)
        decided_by_host = {proc.name: _decided_in_log(proc.log()) for proc in (here, there)}
        assert sum(decided_by_host.values()) == len(ids), decided_by_host
        assert all(decided_by_host.values()), f"one host decided nothing: {decided_by_host}"
        print(f"two hosts, two network namespaces: decided per worker {decided_by_host}; {summary}")
    finally:
        stack.stop_all()
        namespace.stop()


# --- how long intake takes while the broker is down ----------------------------------------------


def test_intake_answers_quickly_while_the_broker_is_down(settings: Settings, site: SiteCredentials) -> None:
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(settings.model_copy(update={"redis_url": dead_broker}))
    try:
        client = app.test_client()
        timings = []
        for number in range(2):
            body = encode(comment_event(site.name, f"c-{number}"))
            started = time.monotonic()
            response = client.post("/webhooks/comments", data=body, headers=signed_headers(site.secret, body))
            timings.append(time.monotonic() - started)
            assert response.status_code == 202, response.get_data(as_text=True)
        assert max(timings) < 2.0, f"intake took {max(timings):.1f} s per comment with the broker down"
    finally:
        app.extensions["moderation"].sessions.kw["bind"].dispose()
