"""The service against the bare Flask + Celery + Redis + PostgreSQL stack, in one run on this machine.

    .venv/bin/python -m bench.stack [--quick] [--model PATH.skops] [--output FILE.json]

Starts a private redis-server, a fresh PostgreSQL database on 127.0.0.1:5432 (dropped at the end) and a
callback sink, then for the bare reference and then the service: intake at full speed (wrk, pre-signed
requests), the decision rate of a backlog with 1 and 2 worker processes, the highest offered rate the
decisions keep up with (steps of a fixed offered rate), and end-to-end latency (POST to stored decision)
at fixed offered rates including half the reference's sustained rate. Also the classifier on one core
(bench/classifier.py), the memory of each process and the CPU each group of processes spends per comment
(where the time goes). Prints the tables; writes JSON to
bench/results/stack-<timestamp>.json. DESIGN section 7 has the targets.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
from sqlalchemy import Engine, make_url, text

from bench.common import (
    HOST,
    RESULTS,
    SITE,
    Comments,
    CpuMeter,
    ModelFile,
    ProcessFinder,
    activate_model,
    add_site,
    add_stored_at_column,
    answers,
    base_env,
    count,
    fresh_database,
    load_average,
    machine,
    model_file,
    now_iso,
    offer,
    percentile,
    private_redis,
    process_tree,
    processes_titled,
    rss_mib,
    run_wrk,
    service_env,
    service_process,
    wait_until,
)
from bench.reference.schema import TASK_QUEUE, create_tables
from models.db import create_db_engine
from tests.support.processes import ServiceProcess
from tests.support.services import free_port
from workers.queues import WORKER_QUEUES

WEB_WORKERS = 2  # gunicorn processes, both stacks (WEB_WORKERS' default)


@dataclass(frozen=True)
class Plan:
    intake_seconds: float = 15
    intake_connections: int = 32
    drain_window: float = 5
    step_fractions: tuple[float, ...] = (0.5, 0.7, 0.85, 1.0, 1.15)
    step_seconds: float = 8
    e2e_seconds: float = 15
    settle_timeout: float = 90
    classifier_args: tuple[str, ...] = ()


FULL = Plan()
QUICK = Plan(
    intake_seconds=1,
    intake_connections=2,
    drain_window=1,
    step_fractions=(0.3,),
    step_seconds=2,
    e2e_seconds=2,
    settle_timeout=30,
    classifier_args=("--quick",),
)


@dataclass
class StackRun:
    """One stack's processes and how to read its progress from the database."""

    name: str
    engine: Engine
    env: dict[str, str]
    workdir: Path
    comments_table: str
    decided_table: str
    decided_sql: str
    stored_sql: str  # external_id, stored time, for comments whose external_id starts with :prefix
    web_argv: list[str]
    worker_argv: Callable[[int], list[str]]
    redis_url: str
    queues: tuple[str, ...]
    web: ServiceProcess | None = None
    workers: list[ServiceProcess] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    # PostgreSQL, Redis, the callback sink and this harness: their CPU counts for whichever stack runs.
    shared_processes: dict[str, ProcessFinder] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start_web(self) -> None:
        argv = [*self.web_argv, "--port", str(self.port), "--workers", str(WEB_WORKERS)]
        self.web = service_process(f"{self.name}-web", argv, self.env, self.workdir / f"{self.name}-web.log").start()
        wait_until(lambda: answers(f"{self.base_url}/healthz"), 60, f"{self.name} web", [self.web])

    def add_worker(self) -> ServiceProcess:
        number = len(self.workers) + 1
        name = f"{self.name}-worker{number}"
        worker = service_process(name, self.worker_argv(number), self.env, self.workdir / f"{name}.log").start()
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for proc in [*self.workers, self.web]:
            if proc is not None:
                proc.stop()

    def accepted(self) -> int:
        return count(self.engine, f"SELECT count(*) FROM {self.comments_table}")  # noqa: S608 - our own names

    def decided(self) -> int:
        return count(self.engine, self.decided_sql)

    def pending(self) -> int:
        return self.accepted() - self.decided()

    def queued(self) -> int:
        """Tasks waiting in the broker, in all of the stack's queues."""
        client = redis.Redis.from_url(self.redis_url)
        lengths: list[Any] = [client.llen(queue) for queue in self.queues]
        return sum(int(length) for length in lengths)

    def purge_undecided(self) -> int:
        """Empty the broker's queue and delete the comments still undecided (their rows cascade)."""
        redis.Redis.from_url(self.redis_url).delete(*self.queues)
        time.sleep(2.0)  # the task each worker holds finishes
        table, decided = self.comments_table, self.decided_table
        with self.engine.begin() as connection:
            if table == "ref_comments":
                sql = f"DELETE FROM {table} WHERE id NOT IN (SELECT comment_id FROM {decided})"  # noqa: S608
            else:
                sql = f"DELETE FROM {table} WHERE id NOT IN (SELECT comment_id FROM {decided} WHERE is_current)"  # noqa: S608
            return int(connection.execute(text(sql)).rowcount)

    def stored_at(self, prefix: str) -> dict[str, float]:
        with self.engine.connect() as connection:
            rows = connection.execute(text(self.stored_sql), {"prefix": f"{prefix}-%"}).all()
        return {external_id: stored.timestamp() for external_id, stored in rows}

    def cpu_meter(self) -> CpuMeter:
        trees = [process_tree(worker) for worker in self.workers]
        own: dict[str, ProcessFinder] = {
            "web": process_tree(self.web) if self.web else list,
            "workers": lambda: [process for tree in trees for process in tree()],
        }
        return CpuMeter(own | self.shared_processes)

    def memory(self) -> dict[str, list[float]]:
        found = {"web": rss_mib(self.web) if self.web else []}
        for worker in self.workers:
            found[worker.name.removeprefix(f"{self.name}-")] = rss_mib(worker)
        return found


def service_stack(engine: Engine, url: str, redis_url: str, workdir: Path) -> StackRun:
    env = service_env(url, redis_url, workdir)
    return StackRun(
        name="service",
        engine=engine,
        env=env,
        workdir=workdir,
        comments_table="comments",
        decided_table="decisions",
        decided_sql="SELECT count(*) FROM decisions WHERE is_current",
        stored_sql=(
            "SELECT c.external_id, d.bench_stored_at FROM comments c JOIN decisions d ON d.comment_id = c.id "
            "WHERE d.is_current AND c.external_id LIKE :prefix"
        ),
        web_argv=[sys.executable, "-m", "server", "web", "--host", HOST],
        redis_url=redis_url,
        queues=WORKER_QUEUES,
        worker_argv=lambda n: [
            sys.executable,
            "-m",
            "server",
            "worker",
            "--concurrency",
            "1",
            "--hostname",
            f"bench{n}@%h",
        ],
    )


def reference_stack(engine: Engine, url: str, redis_url: str, workdir: Path, model: ModelFile) -> StackRun:
    env = base_env(url, redis_url) | {
        "MODEL_PATH": str(model.path),
        "MODEL_SHA256": model.sha256,
        "MODEL_CARD": json.dumps(model.card),
    }
    return StackRun(
        name="reference",
        engine=engine,
        env=env,
        workdir=workdir,
        comments_table="ref_comments",
        decided_table="ref_decisions",
        decided_sql="SELECT count(*) FROM ref_decisions",
        stored_sql=(
            "SELECT c.external_id, d.bench_stored_at FROM ref_comments c JOIN ref_decisions d "
            "ON d.comment_id = c.id WHERE c.external_id LIKE :prefix"
        ),
        web_argv=[sys.executable, "-m", "bench.reference.app"],
        redis_url=redis_url,
        queues=(TASK_QUEUE,),
        worker_argv=lambda n: [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.reference.worker",
            "worker",
            "--queues=reference",
            "--concurrency=1",
            "--loglevel=INFO",  # as the service's workers (LOG_LEVEL=INFO)
            "--without-gossip",
            "--without-mingle",
            f"--hostname=reference{n}@%h",
        ],
    )


# --- phases -------------------------------------------------------------------------------------


def measure_intake(stack: StackRun, comments: Comments, plan: Plan) -> dict[str, Any]:
    """Full speed with no worker running (the backlog stays in Redis for the drain phase)."""
    before = stack.accepted()
    # More pre-signed requests than wrk can send in the time, so each is sent once.
    requests = comments.make(f"intake-{stack.name}", max(2000, int(plan.intake_seconds * 2500)))
    result = run_wrk(stack.base_url, requests, plan.intake_seconds, plan.intake_connections, stack.workdir)
    result["stored"] = stack.accepted() - before
    result["load_average"] = load_average()
    # DESIGN's latency target is at half the intake rate: an open-loop run at that rate (no worker yet).
    half = max(1.0, round(result["requests_per_second"] / 2))
    prefix = f"intake-half-{stack.name}"
    result["at_half_rate"] = offer(
        HOST, stack.port, functools.partial(comments.make, prefix), half, plan.e2e_seconds / 3
    )
    result["at_half_rate"] = result["at_half_rate"].summary()
    return result


def measure_drain(stack: StackRun, plan: Plan) -> dict[str, Any]:
    """Decisions per second while a backlog lasts, with one worker process and then two."""
    found: dict[str, Any] = {"backlog": stack.pending()}
    first = stack.add_worker()
    wait_until(lambda: stack.decided() > 0, 60, f"{stack.name}'s first decision", [first])
    found["one_worker_per_second"] = _decision_rate(stack, plan.drain_window)
    second = stack.add_worker()
    start = stack.decided()
    wait_until(lambda: stack.decided() > start + 20 or stack.pending() == 0, 30, "the second worker", [second])
    time.sleep(min(2.0, plan.drain_window))  # the second worker has loaded its model by now
    found["two_workers_per_second"] = _decision_rate(stack, plan.drain_window)
    try:
        settle(stack, plan.settle_timeout)
    except RuntimeError:
        # Bounded run time: what is left of the backlog after the measurement is removed, so the next
        # phases start from an empty queue. Recorded, and excluded from "every accepted comment decided".
        found["purged_after_drain"] = stack.purge_undecided()
        settle(stack, plan.settle_timeout)
    found["load_average"] = load_average()
    return found


def _decision_rate(stack: StackRun, window: float) -> dict[str, Any]:
    start_time, start_count = time.monotonic(), stack.decided()
    emptied = False
    while time.monotonic() - start_time < window:
        time.sleep(0.25)
        if stack.pending() == 0:
            emptied = True  # the backlog ran out: the rate is a lower bound
            break
    elapsed = time.monotonic() - start_time
    return {"rate": round((stack.decided() - start_count) / elapsed, 1), "backlog_ran_out": emptied}


def settle(stack: StackRun, timeout: float) -> float:
    """Wait until every accepted comment is decided and the broker's queue is empty; seconds waited."""
    started = time.monotonic()
    wait_until(
        lambda: stack.pending() <= 0 and stack.queued() == 0,
        timeout,
        f"{stack.name} to finish its backlog",
        stack.workers,
    )
    return time.monotonic() - started


def measure_sustained(stack: StackRun, comments: Comments, capacity: float, plan: Plan) -> dict[str, Any]:
    """Steps of a fixed offered rate: the highest one after which no backlog is left over."""
    steps = []
    best = 0.0
    for fraction in plan.step_fractions:
        rate = max(1.0, round(capacity * fraction))
        loads = load_average()
        prefix = f"step-{stack.name}-{rate}"
        offered = offer(HOST, stack.port, functools.partial(comments.make, prefix), rate, plan.step_seconds)
        time.sleep(1.0)  # what is in flight lands; what is left after that is backlog
        backlog, queued = stack.pending(), stack.queued()
        summary = offered.summary()
        errors = sum(v for k, v in summary["statuses"].items() if k not in ("200", "202"))
        kept_up = (
            backlog <= max(5, 0.05 * len(offered.sent))
            and queued <= max(5, 0.05 * len(offered.sent))
            and summary["achieved_per_second"] >= 0.95 * rate
            and errors == 0
        )
        steps.append(
            {**summary, "backlog_after": backlog, "queued_after": queued, "kept_up": kept_up, "load_average": loads}
        )
        try:
            settle(stack, plan.settle_timeout)
        except RuntimeError:
            steps[-1]["did_not_drain"] = True
            break
        if not kept_up:
            break
        best = rate
    return {"steps": steps, "sustained_per_second": best}


def measure_end_to_end(stack: StackRun, comments: Comments, rate: float, plan: Plan, label: str) -> dict[str, Any]:
    prefix = f"e2e-{stack.name}-{label}"
    loads = load_average()
    meter = stack.cpu_meter()
    meter.start()
    offered = offer(HOST, stack.port, lambda n: comments.make(prefix, n), rate, plan.e2e_seconds)
    fell_behind = False
    try:
        settle(stack, plan.settle_timeout)
    except RuntimeError as error:  # fell behind for good: report what was decided
        print(f"[{stack.name}] {error}", flush=True)
        fell_behind = True
    cpu = meter.stop()
    stored = stack.stored_at(prefix)
    accepted = offered.accepted
    delays = sorted(stored[s.external_id] - s.sent_at for s in accepted if s.external_id in stored)
    # The next phase starts from an empty queue: what is still undecided is removed (and counted).
    purged = stack.purge_undecided() if fell_behind else 0
    return {
        **offered.summary(),
        "label": label,
        "purged_undecided": purged,
        "decided": len(delays),
        "accepted": len(accepted),
        "e2e_p50_ms": round(percentile(delays, 50) * 1000, 1),
        "e2e_p99_ms": round(percentile(delays, 99) * 1000, 1),
        "e2e_max_ms": round((delays[-1] if delays else 0) * 1000, 1),
        "load_average": loads,
        "cpu_ms_per_comment": cpu_per_comment(cpu, len(accepted)),
    }


def cpu_per_comment(cpu_seconds: dict[str, float], comments: int) -> dict[str, float]:
    """Each group's CPU time per accepted comment in ms, from the first request until all were decided."""
    if not comments:
        return {}
    per_group = {group: round(seconds * 1000 / comments, 2) for group, seconds in cpu_seconds.items()}
    return per_group | {"total": round(sum(per_group.values()), 2)}


def run_stack(stack: StackRun, comments: Comments, plan: Plan, e2e_rates: dict[str, float]) -> dict[str, Any]:
    """All phases for one stack; ``e2e_rates`` may name rates by the reference's results (filled in later)."""
    print(f"[{stack.name}] starting web", flush=True)
    stack.start_web()
    result: dict[str, Any] = {"load_average_start": load_average()}
    print(f"[{stack.name}] intake at full speed for {plan.intake_seconds:g} s (wrk)", flush=True)
    result["intake"] = measure_intake(stack, comments, plan)
    print(f"[{stack.name}] draining a backlog of {stack.pending()} with 1 then 2 workers", flush=True)
    result["drain"] = measure_drain(stack, plan)
    drain = result["drain"]
    capacity = max(drain["one_worker_per_second"]["rate"], drain["two_workers_per_second"]["rate"])
    print(f"[{stack.name}] offered-rate steps around {capacity:g}/s", flush=True)
    result["sustained"] = measure_sustained(stack, comments, capacity, plan)
    sustained = result["sustained"]["sustained_per_second"] or capacity
    own_half = max(1.0, round(sustained / 2))
    reference = not e2e_rates
    if reference:  # the reference: its own half sustained rate and its sustained rate
        e2e_rates = {"half_reference_sustained": own_half, "reference_sustained": sustained}
    result["end_to_end"] = {}
    for label, rate in e2e_rates.items():
        print(f"[{stack.name}] end to end at {rate:g}/s ({label})", flush=True)
        result["end_to_end"][label] = measure_end_to_end(stack, comments, rate, plan, label)
    if not reference:  # the latency of this stack without a queue: at half its own sustained rate
        print(f"[{stack.name}] end to end at {own_half:g}/s (half its own sustained rate)", flush=True)
        result["end_to_end_own_half"] = measure_end_to_end(stack, comments, own_half, plan, "own-half")
    result["memory_mib"] = stack.memory()
    result["undecided"] = stack.pending()
    return result


def measure_classifier(model: ModelFile, plan: Plan) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.classifier", "--model", str(model.path), "--no-save", *plan.classifier_args]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def busy_processes() -> list[str]:
    """Other processes using CPU when the run starts: the machine is shared."""
    procs = list(psutil.process_iter(["name", "cmdline"]))
    for proc in procs:
        try:
            proc.cpu_percent(None)
        except psutil.Error:
            continue
    time.sleep(1.0)
    busy = []
    for proc in procs:
        try:
            share = proc.cpu_percent(None)
        except psutil.Error:
            continue
        if share >= 5:
            command = " ".join(proc.info["cmdline"] or [proc.info["name"] or "?"])[:100]
            busy.append(f"{share:.0f}% {command}")
    return busy


# --- report -------------------------------------------------------------------------------------


def ratio(service: float, reference: float) -> float | None:
    return round(service / reference, 2) if reference else None


def comparison(reference: dict[str, Any], service: dict[str, Any], classifier: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def row(name: str, ref: float | None, svc: float, target: str, met: bool | None) -> None:
        rows.append(
            {
                "metric": name,
                "reference": ref,
                "service": svc,
                "ratio": ratio(svc, ref) if ref is not None else None,
                "target": target,
                "met": met,
            }
        )

    ri, si = reference["intake"], service["intake"]
    row("intake requests/s (wrk)", ri["requests_per_second"], si["requests_per_second"], ">= 0.7 x ref", None)
    rows[-1]["met"] = (rows[-1]["ratio"] or 0) >= 0.7
    row("intake p50 ms (wrk, full speed)", ri["p50_ms"], si["p50_ms"], "", None)
    row("intake p99 ms (wrk, full speed)", ri["p99_ms"], si["p99_ms"], "", None)
    rh, sh = ri["at_half_rate"], si["at_half_rate"]
    row(
        f"intake p99 ms at half its rate ({rh['offered_per_second']:g}/s ref, {sh['offered_per_second']:g}/s service)",
        rh["intake_p99_ms"],
        sh["intake_p99_ms"],
        "< 50 ms",
        sh["intake_p99_ms"] < 50,
    )
    rs, ss = reference["sustained"]["sustained_per_second"], service["sustained"]["sustained_per_second"]
    row("sustained decisions/s (no backlog growth)", rs, ss, ">= 1.5 x ref", (ratio(ss, rs) or 0) >= 1.5)
    for workers in ("one_worker", "two_workers"):
        key = f"{workers}_per_second"
        row(
            f"backlog drain decisions/s, {workers.replace('_', ' ')}",
            reference["drain"][key]["rate"],
            service["drain"][key]["rate"],
            "",
            None,
        )
    for label in service["end_to_end"]:
        re_, se = reference["end_to_end"][label], service["end_to_end"][label]
        half = label == "half_reference_sustained"
        rate = se["offered_per_second"]
        row(
            f"e2e p50 ms at {rate:g}/s",
            re_["e2e_p50_ms"],
            se["e2e_p50_ms"],
            "< 50 ms" if half else "",
            se["e2e_p50_ms"] < 50 if half else None,
        )
        row(
            f"e2e p99 ms at {rate:g}/s",
            re_["e2e_p99_ms"],
            se["e2e_p99_ms"],
            "< 250 ms" if half else "",
            se["e2e_p99_ms"] < 250 if half else None,
        )
        row(
            f"intake p99 ms at {rate:g}/s",
            re_["intake_p99_ms"],
            se["intake_p99_ms"],
            "",
            None,
        )
    own = service.get("end_to_end_own_half")
    if own:
        rate = own["offered_per_second"]
        row(f"service e2e p50 ms at {rate:g}/s (half its own)", None, own["e2e_p50_ms"], "", None)
        row(f"service e2e p99 ms at {rate:g}/s (half its own)", None, own["e2e_p99_ms"], "", None)
        row(f"service intake p99 ms at {rate:g}/s", None, own["intake_p99_ms"], "", None)
    row(
        "classifier single p50 ms (1 core)",
        None,
        classifier["single_ms_p50"],
        "< 2 ms",
        classifier["single_ms_p50"] < 2,
    )
    row(
        "classifier batch comments/s (1 core)",
        None,
        classifier["batch_per_second"],
        "> 5000",
        classifier["batch_per_second"] > 5000,
    )
    for role in ("web", "worker1"):
        ref_mem = sum(reference["memory_mib"].get(role, []))
        svc_mem = sum(service["memory_mib"].get(role, []))
        row(f"RSS MiB, {role} (all its processes)", round(ref_mem, 1), round(svc_mem, 1), "", None)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "NO"
        return f"{value:g}" if isinstance(value, float) else str(value)

    header = ("metric", "reference", "service", "ratio", "target", "met")
    table = [header] + [tuple(cell(r[k]) for k in header) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for number, line in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
        if number == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run on tiny numbers (about a minute)")
    parser.add_argument("--model", type=Path, help="a .skops model (default: var/bench-model, trained once)")
    parser.add_argument("--output", type=Path, help="where to write the JSON (default: bench/results/)")
    parser.add_argument("--note", default="", help="a remark stored with the results (what changed)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    when = now_iso()
    output = args.output or RESULTS / f"stack-{when.replace(':', '')}{'-quick' if args.quick else ''}.json"
    workdir = RESULTS / "tmp" / when.replace(":", "")
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "when": when,
        "quick": args.quick,
        "note": args.note,
        "machine": machine(),
        "load_average_start": load_average(),
        "busy_processes_start": busy_processes(),
        "plan": plan.__dict__,
    }
    model = model_file(args.model)
    result["model"] = {"version": model.version, "bytes": model.path.stat().st_size}
    sink_port = free_port()
    sink_argv = [sys.executable, "-m", "bench.sink", "--port", str(sink_port)]
    sink = service_process("sink", sink_argv, {}, workdir / "sink.log")
    with private_redis() as redis_url, fresh_database() as url:
        engine = create_db_engine(url)
        try:
            sink.env = base_env(url, redis_url)
            sink.start()
            wait_until(lambda: answers(f"http://{HOST}:{sink_port}/"), 20, "the callback sink", [sink])
            activate_model(engine, model)
            secret = add_site(engine, f"http://{HOST}:{sink_port}/moderation-callback")
            create_tables(engine)
            add_stored_at_column(engine)
            comments = Comments(secret, SITE)
            shared = shared_processes(url, redis_url, sink)
            reference = reference_stack(engine, url, redis_url, workdir, model)
            reference.shared_processes = shared
            try:
                result["reference"] = run_stack(reference, comments, plan, {})
            finally:
                reference.stop()
            redis.Redis.from_url(redis_url).flushall()
            rates = {k: v["offered_per_second"] for k, v in result["reference"]["end_to_end"].items()}
            service = service_stack(engine, url, redis_url, workdir)
            service.shared_processes = shared
            try:
                result["service"] = run_stack(service, comments, plan, rates)
                result["service"]["callbacks"] = _callback_statuses(engine)
            finally:
                service.stop()
        finally:
            sink.stop()
            engine.dispose()
    print("[classifier] one core, single and batched", flush=True)
    result["classifier"] = measure_classifier(model, plan)
    result["comparison"] = comparison(result["reference"], result["service"], result["classifier"])
    result["where_the_time_goes"] = where_the_time_goes(result["reference"], result["service"])
    result["load_average_end"] = load_average()
    result["seconds"] = round(time.monotonic() - started, 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)  # the processes' logs; kept when a run fails
    print()
    print_table(result["comparison"])
    print_where_the_time_goes(result["where_the_time_goes"])
    print(
        f"\nload average at start {result['load_average_start']}, at end {result['load_average_end']}; "
        f"{result['seconds']:g} s; written to {output}"
    )


def shared_processes(database_url: str, redis_url: str, sink: ServiceProcess) -> dict[str, ProcessFinder]:
    """The processes both stacks use, found by what they are called: each backend names its database."""
    database = make_url(database_url).database
    redis_address = redis_url.removeprefix("redis://").split("/")[0]
    # The server's own writers flush what the backends write; nothing else uses this server during a run.
    writers = [processes_titled("postgres:", name) for name in ("walwriter", "background writer", "checkpointer")]
    backends = processes_titled("postgres:", f" {database} ")
    return {
        "postgres": lambda: backends() + [process for find in writers for process in find()],
        "redis": processes_titled("redis-server", redis_address),
        "callback sink": process_tree(sink),
        "load generator": lambda: [psutil.Process()],  # this harness: requests, and polling for decisions
    }


TIME_GOES_AT = "half_reference_sustained"  # the same offered rate for both stacks, below both capacities


def where_the_time_goes(reference: dict[str, Any], service: dict[str, Any]) -> dict[str, Any]:
    """CPU per comment of every process group at one offered rate, both stacks, and what the service adds."""
    ours, theirs = service["end_to_end"][TIME_GOES_AT], reference["end_to_end"][TIME_GOES_AT]
    mine, bare = ours["cpu_ms_per_comment"], theirs["cpu_ms_per_comment"]
    rows = [
        {
            "group": group,
            "reference_ms": bare.get(group, 0.0),
            "service_ms": mine.get(group, 0.0),
            "added_ms": round(mine.get(group, 0.0) - bare.get(group, 0.0), 2),
        }
        for group in [*(g for g in mine if g != "total"), "total"]
    ]
    return {"offered_per_second": ours["offered_per_second"], "cpu_ms_per_comment": rows}


def print_where_the_time_goes(found: dict[str, Any]) -> None:
    offered = found["offered_per_second"]
    print(f"\nWhere the time goes: CPU ms per comment at {offered:g}/s offered, by group of processes")
    print(f"{'processes':<16} {'reference':>10} {'service':>10} {'added':>10}")
    for row in found["cpu_ms_per_comment"]:
        print(f"{row['group']:<16} {row['reference_ms']:>10.2f} {row['service_ms']:>10.2f} {row['added_ms']:>+10.2f}")


def _callback_statuses(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT status, count(*) FROM callback_deliveries GROUP BY status")).all()
    return {status: int(n) for status, n in rows}


if __name__ == "__main__":
    main()
