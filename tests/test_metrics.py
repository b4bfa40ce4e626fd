"""Prometheus series: the ones alerts watch are there before their first event."""

from __future__ import annotations

import subprocess
import sys

from moderation.reasons import Reason


def test_watched_series_start_at_zero_in_a_new_process() -> None:
    # A new process, so no earlier test has counted anything yet.
    script = (
        "from prometheus_client import generate_latest\nimport moderation.metrics\nprint(generate_latest().decode())\n"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    lines = set(output.splitlines())
    assert 'moderation_intake_requests_total{status="503"} 0.0' in lines
    assert 'moderation_intake_requests_total{status="202"} 0.0' in lines
    assert 'moderation_decisions_total{decided_by="model",outcome="hold"} 0.0' in lines
    assert 'moderation_decisions_total{decided_by="moderator",outcome="reject"} 0.0' in lines
    assert 'moderation_callback_attempts_total{result="delivered"} 0.0' in lines
    for reason in Reason:
        assert f'moderation_decision_reasons_total{{reason="{reason.value}"}} 0.0' in lines
