"""OpenTelemetry tracing, switched on by LA_TRACING (`off`, `console` or `otlp`).

An input CloudEvent that carries the distributed-tracing extension (`traceparent`, and
`tracestate`; in binary mode the `ce_traceparent` and `ce_tracestate` headers) is applied in a
span that continues its trace; the outputs it causes carry the `traceparent` of that span.
`otlp` exports with the standard OTEL_EXPORTER_OTLP_* variables; OTEL_SERVICE_NAME and
OTEL_RESOURCE_ATTRIBUTES name the service as usual. Spans follow the
OpenTelemetry messaging conventions (semantic conventions 1.27+: `messaging.operation.type`,
`messaging.consumer.group.name`, `messaging.destination.partition.id`, ...).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.trace import SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from learning_account import __version__
from learning_account.wire.binary import BINARY_HEADER_PREFIX, binary_attributes

_PROPAGATOR = TraceContextTextMapPropagator()
SERVICE_NAME = "learning-account"


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

    attributes = {"service.version": __version__}
    if not os.environ.get("OTEL_SERVICE_NAME"):  # the operator's name wins over ours
        attributes["service.name"] = SERVICE_NAME
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif mode == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider.get_tracer("learning_account", __version__)


_TRACE_ATTRIBUTES = ("traceparent", "tracestate")


def trace_headers(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]] = ()
) -> dict[str, str]:
    """The CloudEvents distributed-tracing attributes of a message: its `ce_traceparent` and
    `ce_tracestate` headers in binary mode (`wire.binary_attributes`), else its structured
    document's."""
    if headers:
        try:
            binary = binary_attributes(headers)
        except ValueError:  # an invalid envelope is dead-lettered before it is applied
            binary = None
        if binary is not None:
            found = {name.lower(): raw for name, raw in headers if raw is not None}
            return {
                name: found[BINARY_HEADER_PREFIX + name].decode("utf-8", "replace")
                for name in _TRACE_ATTRIBUTES
                if BINARY_HEADER_PREFIX + name in found
            }
    if not value or b'"traceparent"' not in value:
        return {}
    try:
        document = json.loads(value)
    except ValueError:
        return {}
    return {
        name: document[name] for name in _TRACE_ATTRIBUTES if isinstance(document.get(name), str)
    }


@contextmanager
def applying(
    tracer: Tracer | None,
    value: bytes | None,
    *,
    headers: Sequence[tuple[str, bytes | None]] = (),
    event_type: str,
    event_id: str,
    source: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None = None,
    consumer_group: str | None = None,
) -> Iterator[str | None]:
    """A span around applying one event; yields the `traceparent` its outputs should carry.

    Named `process <topic>` and of kind CONSUMER, as the messaging conventions name a span that
    processes one received message.
    """
    if tracer is None:
        yield None
        return
    parent = _PROPAGATOR.extract(trace_headers(value, headers))
    attributes: dict[str, str | int] = {
        "cloudevents.event_id": event_id,
        "cloudevents.event_source": source,
        "cloudevents.event_type": event_type,
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
        "messaging.message.id": event_id,
    }
    if consumer_group is not None:
        attributes["messaging.consumer.group.name"] = consumer_group
    if key is not None:
        attributes["messaging.kafka.message.key"] = key.decode("utf-8", "replace")
    with tracer.start_as_current_span(
        f"process {topic}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    ):
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        yield carrier.get("traceparent")
