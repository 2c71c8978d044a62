"""Smoke run of the benchmark (bench/run.py --quick, smaller): it runs end to end and reports every
figure.

No assertion on speed: only that the JSON has every field and the service drained the backlog.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

RUN_FIELDS = {
    "name",
    "events",
    "seconds",
    "events_per_s",
    "cpu_seconds",
    "cpu_s_per_10k_events",
    "committed",
    "backlog",
    "completed",
}


def test_quick_benchmark_reports_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    completed = subprocess.run(
        # smaller than --quick alone: what is checked is that every phase runs and reports
        [
            sys.executable,
            str(REPO / "bench" / "run.py"),
            "--quick",
            "--students",
            "500",
            "--latency-seconds",
            "2",
            "--naive-seconds",
            "2",
            "--memory-students",
            "60",
            "--output",
            str(output),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "| service / naive |" in completed.stdout  # the markdown table is printed

    results = json.loads(output.read_text())
    throughput = results["throughput"]
    for name in ("service", "naive", "ceiling", "ceiling_librdkafka", "service_2_instances"):
        assert RUN_FIELDS <= set(throughput[name]), name
        assert throughput[name]["events"] > 0, name
        assert set(throughput[name]["cpu_us_per_event"]) == {"consumer", "tansu", "redis"}, name

    service = throughput["service"]
    backlog = results["load"]["events"]
    assert service["completed"] and service["committed"] == backlog == service["backlog"]
    assert throughput["service_2_instances"]["committed"] == backlog
    assert throughput["ceiling"]["committed"] == backlog
    assert throughput["ceiling_librdkafka"]["committed"] == backlog
    assert all(value > 0 for value in service["cpu_us_per_event"].values())
    assert set(results["cpu_us_per_event"]) == {"service", "tansu", "redis", "redis_replay"}

    replay = results["redis_limit"]["replay"]
    assert replay["events"] == results["redis_limit"]["capture"]["events"] > 0
    assert replay["errors"] == 0 and replay["same_state_as_captured"] is True
    assert replay["events_per_s"] > 0 and replay["redis_cpu_us_per_event"] > 0
    limit = results["machine_limit"]
    assert limit["events_per_s"] == min(limit["redis_events_per_s"], limit["broker_events_per_s"])
    assert results["all_events_processed"] is True

    assert set(results["ratios"]) >= {
        "service_vs_naive",
        "service_vs_ceiling",
        "service_vs_ceiling_librdkafka",
        "service_vs_redis_limit",
        "service_vs_machine_limit",
        "scaling_2_vs_1",
    }
    latency = results["latency"]
    assert latency["balance_changed_matched"] == latency["balance_changed_expected"] > 0
    assert latency["p50_ms"] is not None and latency["p99_ms"] is not None
    for reference in ("latency_ceiling", "latency_ceiling_librdkafka"):
        ceiling_latency = results[reference]
        assert ceiling_latency["balance_changed_matched"] == latency["balance_changed_expected"]
    memory = results["memory"]
    assert memory["bytes_per_student"] > 0 and memory["bytes_per_student_with_outbox"] > 0
    for kind in ("history", "history_live"):
        history = results[kind]
        assert set(history["us_per_event_at"]) == {"1", "100", "250", "500"}, kind
        assert history["ratio_500_vs_1"] > 0, kind
    assert "| the same, store as the live service has it" in completed.stdout
    assert set(results["targets"]) == {
        "service_vs_naive",
        "service_vs_ceiling",
        "p99_latency",
        "redis_cpu",
        "redis_per_student",
        "history_cost",
    }
    assert all(isinstance(t["met"], bool) for t in results["targets"].values())
    assert results["table_markdown"] in completed.stdout
