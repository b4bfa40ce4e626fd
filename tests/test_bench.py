"""The stack benchmark's smoke run: the harness starts both stacks, loads them and reports in the agreed shape.

Numbers are not checked (speed targets live in bench/, not in timed tests); completeness is: every
comment either stack accepted got its decision.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TrainedModel
from tests.support.services import postgres_reachable

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
@pytest.mark.skipif(not postgres_reachable(), reason="PostgreSQL is not reachable at 127.0.0.1:5432")
def test_quick_stack_benchmark_decides_every_accepted_comment(trained_model: TrainedModel, tmp_path: Path) -> None:
    output = tmp_path / "stack.json"
    argv = [sys.executable, "-m", "bench.stack", "--quick", "--model", str(trained_model.artifact.path)]
    done = subprocess.run(
        [*argv, "--output", str(output)], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(output.read_text())

    assert result["model"]["version"] == trained_model.version
    for name in ("reference", "service"):
        stack = result[name]
        assert stack["intake"]["requests"] > 0 and stack["intake"]["requests_per_second"] > 0
        assert stack["intake"]["stored"] > 0
        assert stack["drain"]["one_worker_per_second"]["rate"] > 0
        assert set(stack["end_to_end"]) == {"half_reference_sustained", "reference_sustained"}
        for run in stack["end_to_end"].values():
            assert run["accepted"] == run["sent"] > 0
            assert run["decided"] == run["accepted"], f"{name}: accepted comments left undecided"
            assert run["e2e_p50_ms"] > 0
        assert stack["undecided"] == 0, f"{name}: accepted comments left undecided"
        assert stack["memory_mib"]["web"] and stack["memory_mib"]["worker1"]
    own = result["service"]["end_to_end_own_half"]
    assert own["decided"] == own["accepted"] == own["sent"] > 0
    # The service was loaded at the reference's rates, and told the site about each decision.
    for label, run in result["service"]["end_to_end"].items():
        assert run["offered_per_second"] == result["reference"]["end_to_end"][label]["offered_per_second"]
    assert set(result["service"]["callbacks"]) <= {"delivered", "pending", "sending"}
    assert result["service"]["callbacks"].get("delivered", 0) > 0
    assert {"single_ms_p50", "batch_per_second", "model_bytes"} <= set(result["classifier"])
    metrics = {row["metric"] for row in result["comparison"]}
    assert "intake requests/s (wrk)" in metrics and "sustained decisions/s (no backlog growth)" in metrics
    assert all({"reference", "service", "ratio", "target", "met"} <= set(row) for row in result["comparison"])
    assert "service" in done.stdout and "ratio" in done.stdout  # the table was printed

    # Where the time goes: CPU of every process group, found and measured during each latency phase.
    groups = {"web", "workers", "postgres", "redis", "callback sink", "load generator", "total"}
    for name in ("reference", "service"):
        runs = [run["cpu_ms_per_comment"] for run in result[name]["end_to_end"].values()]
        for cpu in runs:
            assert set(cpu) == groups
            assert cpu["total"] == pytest.approx(sum(v for k, v in cpu.items() if k != "total"), abs=0.05)
        # Each group over the phases: one short phase of the quick run can fall within a clock tick of a group's
        # CPU (the reference's PostgreSQL backends once measured 0.0 there).
        assert all(sum(cpu[group] for cpu in runs) > 0 for group in ("web", "workers", "postgres", "redis")), runs
    # The sink is found and measured. Callbacks trail decisions, and a phase's few of them may fall after its
    # end on a loaded machine (psutil counts CPU in 10 ms ticks): both phases together always have some.
    sink = [run["cpu_ms_per_comment"]["callback sink"] for run in result["service"]["end_to_end"].values()]
    assert sum(sink) > 0, sink
    found = result["where_the_time_goes"]
    assert [row["group"] for row in found["cpu_ms_per_comment"]][-1] == "total"
    assert "Where the time goes" in done.stdout
