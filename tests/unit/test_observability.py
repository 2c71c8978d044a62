"""What an operator alerts on: process and build metrics, no `_created` series, spans named and
attributed by the OpenTelemetry messaging conventions, the operator's service name honoured."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from learning_account import __version__
from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import Policy
from learning_account.observability.metrics import Metrics
from learning_account.observability.tracing import create_tracer
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account_dev import events as ev
from support.tools import tool_missing


def _families() -> dict[str, object]:
    metrics = Metrics()
    metrics.events_applied.labels(type="Register").inc()
    text = metrics.render().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_carry_process_platform_and_build_info() -> None:
    families = _families()
    assert "process_cpu_seconds" in families
    assert "process_resident_memory_bytes" in families
    assert "python_info" in families
    build = families["la_build_info"]
    [sample] = build.samples  # type: ignore[attr-defined]
    assert sample.labels == {"version": __version__} and sample.value == 1


def test_no_created_series() -> None:
    text = Metrics().render().decode()
    assert "_created" not in text
    metrics = Metrics()
    metrics.events_applied.labels(type="Register").inc()
    metrics.batch_seconds.observe(0.1)
    assert "_created" not in metrics.render().decode()


def test_promtool_accepts_the_exposition(tmp_path: object) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        tool_missing("promtool is not installed (Debian package prometheus)")
    metrics = Metrics()
    metrics.events_applied.labels(type="Register").inc()
    metrics.consumer_lag.labels(topic="t", partition="0").set(2)
    metrics.redis_seconds.labels(operation="load").observe(0.001)
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=metrics.render(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_span_follows_the_messaging_conventions(redis_client: Redis) -> None:
    exporter = InMemorySpanExporter()
    processor = Processor(
        RedisStore(redis_client),
        Policy(),
        tracer=create_tracer("off", exporter=exporter),
        consumer_group="la-group",
    )
    event = ev.registration("conventions", 2016, {"A": 6})
    record = InputRecord(ev.topic_of(event), 2, 41, b"conventions", ev.to_bytes(event), 1)
    await processor.process([record])
    [span] = exporter.get_finished_spans()
    assert span.name == f"process {record.topic}"
    attributes = dict(span.attributes or {})
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.consumer.group.name"] == "la-group"
    assert attributes["messaging.kafka.message.key"] == "conventions"
    assert attributes["messaging.message.id"] == event["id"]
    assert attributes["messaging.destination.name"] == record.topic
    assert attributes["messaging.destination.partition.id"] == "2"
    assert attributes["messaging.kafka.offset"] == 41
    for deprecated in ("messaging.kafka.destination.partition", "messaging.kafka.message.offset"):
        assert deprecated not in attributes
    resource = span.resource.attributes
    assert resource["service.name"] == "learning-account"
    assert resource["service.version"] == __version__


@pytest.mark.parametrize("name", ["billing-la", "la-eu-west"])
def test_otel_service_name_wins(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", name)
    exporter = InMemorySpanExporter()
    tracer = create_tracer("off", exporter=exporter)
    assert tracer is not None
    with tracer.start_as_current_span("probe"):
        pass
    [span] = exporter.get_finished_spans()
    assert span.resource.attributes["service.name"] == name
    assert span.resource.attributes["service.version"] == __version__


def test_observe_all_counts_as_observe_of_each_amount() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from learning_account.observability.metrics import observe_all

    amounts = [0.0, 0.005, 0.0051, 0.3, 1.0, 2.5, 59.9, 60.0, 75.0, 0.01, 0.01]
    buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
    one, many = CollectorRegistry(), CollectorRegistry()
    each = Histogram("latency", "each", buckets=buckets, registry=one)
    batch = Histogram("latency", "batch", buckets=buckets, registry=many)
    for amount in amounts:
        each.observe(amount)
    observe_all(batch, amounts)
    observe_all(batch, [])
    samples = [(s.name, s.labels, s.value) for m in one.collect() for s in m.samples]
    assert samples == [(s.name, s.labels, s.value) for m in many.collect() for s in m.samples]
    assert ("latency_count", {}, float(len(amounts))) in samples
