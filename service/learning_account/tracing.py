"""OpenTelemetry tracing, switched on by LA_TRACING (`off`, `console` or `otlp`).

An input CloudEvent that carries the distributed-tracing extension (`traceparent`, and
`tracestate`) is applied in a span that continues its trace; the outputs it causes carry the
`traceparent` of that span. `otlp` exports with the standard OTEL_EXPORTER_OTLP_* variables.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.trace import SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()


def create_tracer(mode: str, *, exporter: Any = None) -> Tracer | None:
    """A tracer for `mode`, or None when tracing is off (`exporter` overrides, for tests)."""
    if mode == "off" and exporter is None:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    provider = TracerProvider(resource=Resource.create({"service.name": "learning-account"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif mode == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider.get_tracer("learning_account")


def trace_headers(value: bytes | None) -> dict[str, str]:
    """The CloudEvents distributed-tracing attributes of a structured-mode message."""
    if not value or b'"traceparent"' not in value:
        return {}
    try:
        document = json.loads(value)
    except ValueError:
        return {}
    return {
        name: document[name]
        for name in ("traceparent", "tracestate")
        if isinstance(document.get(name), str)
    }


@contextmanager
def applying(
    tracer: Tracer | None,
    value: bytes | None,
    *,
    event_type: str,
    event_id: str,
    source: str,
    topic: str,
    partition: int,
    offset: int,
) -> Iterator[str | None]:
    """A span around applying one event; yields the `traceparent` its outputs should carry."""
    if tracer is None:
        yield None
        return
    parent = _PROPAGATOR.extract(trace_headers(value))
    with tracer.start_as_current_span(
        f"apply {event_type.rsplit('.', 2)[-2]}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "cloudevents.event_id": event_id,
            "cloudevents.event_source": source,
            "cloudevents.event_type": event_type,
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.kafka.destination.partition": partition,
            "messaging.kafka.message.offset": offset,
        },
    ):
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        yield carrier.get("traceparent")
