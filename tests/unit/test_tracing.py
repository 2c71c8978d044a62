"""OpenTelemetry: an incoming CloudEvent's trace is continued and propagated to its outputs."""

from __future__ import annotations

import json

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import Policy
from learning_account.observability.tracing import create_tracer
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account.wire import decode
from learning_account_dev import events as ev

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


async def test_outputs_continue_the_trace_of_their_input(redis_client: Redis) -> None:
    exporter = InMemorySpanExporter()
    processor = Processor(
        RedisStore(redis_client), Policy(), tracer=create_tracer("off", exporter=exporter)
    )
    event = ev.registration("traced", 2016, {"A": 6})
    event["traceparent"] = f"00-{TRACE_ID}-{PARENT_SPAN}-01"
    record = InputRecord(ev.topic_of(event), 0, 0, b"traced", ev.to_bytes(event), 1)
    report = await processor.process([record])

    [span] = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_SPAN
    assert span.attributes is not None
    assert span.attributes["cloudevents.event_id"] == event["id"]
    [output] = report.outputs
    traceparent = json.loads(output.value)["traceparent"]
    assert traceparent == f"00-{TRACE_ID}-{format(span.context.span_id, '016x')}-01"
    assert decode(output.topic, output.value).id == output.event_id


async def test_a_binary_mode_input_continues_the_trace_of_its_ce_traceparent_header(
    redis_client: Redis,
) -> None:
    exporter = InMemorySpanExporter()
    processor = Processor(
        RedisStore(redis_client), Policy(), tracer=create_tracer("off", exporter=exporter)
    )
    event = ev.registration("traced-binary", 2016, {"A": 6})
    headers: list[tuple[str, bytes | None]] = [
        (f"ce_{name}", str(event[name]).encode())
        for name in ("specversion", "id", "source", "type", "subject", "time")
    ]
    headers += [
        ("ce_traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01".encode()),
        ("content-type", b"application/json"),
    ]
    value = json.dumps(event["data"]).encode()
    record = InputRecord(ev.topic_of(event), 0, 0, b"traced-binary", value, 1, tuple(headers))
    report = await processor.process([record])

    [span] = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_SPAN
    [output] = report.outputs
    traceparent = json.loads(output.value)["traceparent"]
    assert traceparent == f"00-{TRACE_ID}-{format(span.context.span_id, '016x')}-01"


async def test_no_trace_attribute_when_tracing_is_off(redis_client: Redis) -> None:
    processor = Processor(RedisStore(redis_client), Policy())
    event = ev.registration("untraced", 2016, {"A": 6})
    event["traceparent"] = f"00-{TRACE_ID}-{PARENT_SPAN}-01"
    record = InputRecord(ev.topic_of(event), 0, 0, b"k", ev.to_bytes(event), 1)
    [output] = (await processor.process([record])).outputs
    assert "traceparent" not in json.loads(output.value)
