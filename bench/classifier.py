"""Classifier speed on one core: one comment at a time, and in batches; model size and load time.

    .venv/bin/python -m bench.classifier [--model PATH.skops] [--repeat N] [--quick] [--no-save]

With no --model it uses the active model of VAR_DIR (train one first: `moderation train`). Writes the
result as JSON under bench/results/. Targets (DESIGN section 7): under 2 ms single, over 5,000/s batched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.db import create_db_engine, make_session_factory
from moderation.data import load_own_corpus
from moderation.registry import active_version, file_sha256, load_artifact
from server.settings import Settings

RESULTS = Path(__file__).parent / "results"


def active_model_path() -> tuple[Path, str]:
    settings = Settings()
    with make_session_factory(create_db_engine(settings.effective_database_url))() as session:
        row = active_version(session)
        if row is None:
            raise SystemExit("no active model: run `moderation train` first or pass --model")
        return Path(row.path), row.sha256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="200 single comments and one batch pass")
    parser.add_argument("--no-save", action="store_true", help="print only (the stack benchmark stores it)")
    args = parser.parse_args()
    singles_count, repeat = (200, 1) if args.quick else (1000, args.repeat)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the target says
    path, sha = (args.model, file_sha256(args.model)) if args.model else active_model_path()

    started = time.perf_counter()
    model = load_artifact(path, sha, {})
    load_seconds = time.perf_counter() - started
    comments = [e.comment for e in load_own_corpus()]
    model.score_many(comments)  # warm: the per-word cache of a long-running worker

    singles = []
    for comment in comments[:singles_count]:
        started = time.perf_counter()
        model.score(comment)
        singles.append(time.perf_counter() - started)
    batch_rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        model.score_many(comments)
        batch_rates.append(len(comments) / (time.perf_counter() - started))

    when = datetime.now(UTC).isoformat(timespec="seconds")
    result: dict[str, Any] = {
        "when": when,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average": os.getloadavg()[0],
        "model_bytes": path.stat().st_size,
        "load_seconds": round(load_seconds, 3),
        "single_ms_p50": round(statistics.median(singles) * 1000, 3),
        "single_ms_p99": round(sorted(singles)[int(len(singles) * 0.99)] * 1000, 3),
        "batch_per_second": round(statistics.median(batch_rates)),
        "targets": {"single_ms": 2.0, "batch_per_second": 5000},
    }
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"classifier-{when.replace(':', '')}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
