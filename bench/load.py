"""Load test (issue 5): signed comments at a fixed rate for minutes, then the reliability invariant.

    .venv/bin/python -m bench.load [--rate 20] [--duration 180] [--workers 1] [--model PATH.skops]

Starts a private redis-server, a fresh PostgreSQL database on 127.0.0.1:5432 (dropped at the end), a site
that receives the signed callbacks (and verifies them), and the service as operators run it: gunicorn
(`moderation web`, WEB_WORKERS processes), `moderation worker` and `moderation beat`. Sends comments at
``--rate`` per second for ``--duration`` seconds (open loop: a slow answer does not slow the sender),
waits until everything is decided and told, then checks the invariant of tests/support/invariants.py:
every comment accepted with a 2xx has exactly one current decision, told to the site once, nothing lost.
Prints and writes bench/results/load-<timestamp>.json: the rate held, intake and end-to-end latency
percentiles, and the loss (must be 0). Exits non-zero when the invariant does not hold.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.common import (
    HOST,
    RESULTS,
    SITE,
    Comments,
    activate_model,
    add_stored_at_column,
    answers,
    count,
    fresh_database,
    load_average,
    machine,
    model_file,
    now_iso,
    offer,
    percentile,
    private_redis,
    rss_mib,
    service_env,
    service_process,
    wait_until,
)
from bench.stack import busy_processes
from models.db import create_db_engine, make_session_factory
from moderation.sites import create_site
from tests.support.invariants import check_invariants, settled
from tests.support.processes import ServiceProcess
from tests.support.services import free_port
from tests.support.site_server import SiteServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20.0, help="comments per second (default 20)")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load (default 180)")
    parser.add_argument("--workers", type=int, default=1, help="`moderation worker` processes (default 1)")
    parser.add_argument("--concurrency", type=int, default=2, help="each worker's --concurrency (default 2)")
    parser.add_argument("--settle-timeout", type=float, default=300.0, help="seconds to wait for the backlog")
    parser.add_argument("--model", type=Path, help="a .skops model (default: var/bench-model, trained once)")
    parser.add_argument("--output", type=Path, help="where to write the JSON (default: bench/results/)")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    if not result["invariant_held"] or result["loss"]:
        raise SystemExit(1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    when = now_iso()
    output = args.output or RESULTS / f"load-{when.replace(':', '')}.json"
    workdir = RESULTS / "tmp" / f"load-{when.replace(':', '')}"
    workdir.mkdir(parents=True, exist_ok=True)
    model = model_file(args.model)
    result: dict[str, Any] = {
        "when": when,
        "machine": machine(),
        "load_average_start": load_average(),
        "busy_processes_start": busy_processes(),
        "offered_per_second": args.rate,
        "duration_seconds": args.duration,
        "web_workers": 2,
        "worker_processes": args.workers,
        "worker_concurrency": args.concurrency,
        "model": model.version,
    }
    site_server = SiteServer().start()
    procs: list[ServiceProcess] = []
    with private_redis() as redis_url, fresh_database() as url:
        engine = create_db_engine(url)
        try:
            activate_model(engine, model)
            with make_session_factory(engine).begin() as session:
                _, site_server.secret = create_site(session, SITE, site_server.url)
            add_stored_at_column(engine)
            env = service_env(url, redis_url, workdir)
            port = free_port()
            server = [sys.executable, "-m", "server"]
            web_argv = [*server, "web", "--host", HOST, "--port", str(port)]
            web = service_process("web", web_argv, env, workdir / "web.log")
            procs.append(web.start())
            for number in range(1, args.workers + 1):
                argv = [*server, "worker", "--concurrency", str(args.concurrency), "--hostname", f"load{number}@%h"]
                procs.append(service_process(f"worker{number}", argv, env, workdir / f"worker{number}.log").start())
            procs.append(service_process("beat", [*server, "beat"], env, workdir / "beat.log").start())
            wait_until(lambda: answers(f"http://{HOST}:{port}/healthz"), 60, "the web server", procs)
            time.sleep(3)  # workers load the model

            comments = Comments(site_server.secret, SITE)
            print(f"sending {args.rate:g} comments/s for {args.duration:g} s", flush=True)
            offered = offer(HOST, port, lambda n: comments.make("load", n), args.rate, args.duration)
            result["load_average_after_load"] = load_average()
            result["memory_mib"] = {proc.name: rss_mib(proc) for proc in procs}
            accepted_ids = sorted({json.loads(s.body)["id"] for s in offered.accepted})
            started = time.monotonic()
            print(f"{len(accepted_ids)} accepted; waiting until every one is decided and told", flush=True)
            try:
                wait_until(lambda: settled(engine, accepted_ids, [site_server]), args.settle_timeout, "settling", procs)
            except RuntimeError as error:
                result["settle_error"] = str(error)
            result["settle_seconds"] = round(time.monotonic() - started, 1)
            result.update(_latencies(engine, offered))
            decided = count(engine, "SELECT count(DISTINCT comment_id) FROM decisions WHERE is_current")
            result["accepted"] = len(accepted_ids)
            result["decided"] = decided
            result["loss"] = len(accepted_ids) - decided
            try:
                result["invariant"] = check_invariants(engine, accepted_ids, site_server)
                result["invariant_held"] = True
            except AssertionError as violated:
                result["invariant"] = str(violated)[:5000]
                result["invariant_held"] = False
        finally:
            for proc in reversed(procs):
                proc.stop()
            site_server.stop()
            engine.dispose()
    result["load_average_end"] = load_average()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    if result["invariant_held"] and not result["loss"]:
        shutil.rmtree(workdir, ignore_errors=True)  # the processes' logs; kept when the invariant fails
    else:
        print(f"the processes' logs are in {workdir}", flush=True)
    print(f"written to {output}", flush=True)
    return result


def _latencies(engine: Any, offered: Any) -> dict[str, Any]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT c.external_id, d.bench_stored_at FROM comments c JOIN decisions d ON d.comment_id = c.id "
                "WHERE d.is_current"
            )
        ).all()
    stored = {external_id: when.timestamp() for external_id, when in rows}
    delays = sorted(stored[s.external_id] - s.sent_at for s in offered.accepted if s.external_id in stored)
    intake = sorted(s.latency for s in offered.sent if s.status)
    summary: dict[str, Any] = offered.summary()
    return {
        **summary,
        "intake_ms": {f"p{p}": round(percentile(intake, p) * 1000, 1) for p in (50, 90, 99, 99.9)},
        "end_to_end_ms": {f"p{p}": round(percentile(delays, p) * 1000, 1) for p in (50, 90, 99, 99.9)},
        "rate_held": summary["achieved_per_second"] >= 0.98 * offered.rate
        and summary["late_sends"] <= 0.01 * len(offered.sent),
    }


if __name__ == "__main__":
    main()
