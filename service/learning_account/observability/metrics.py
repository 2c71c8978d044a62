"""Prometheus metrics of one service instance, on a registry of its own (not the global one),
so several apps or tests can live in one process."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest

from learning_account import __version__

# `*_created` series double the series count and no alert uses them
disable_created_metrics()  # type: ignore[no-untyped-call]

# the classic text format generate_latest() writes; every Prometheus version scrapes it
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_REDIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    content_type: str = CONTENT_TYPE

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        Gauge(
            "la_build_info",
            "Always 1; the running version as a label",
            ["version"],
            registry=self.registry,
        ).labels(version=__version__).set(1)
        self.events_applied = Counter(
            "la_events_applied",
            "Input events applied, by event type",
            ["type"],
            registry=self.registry,
        )
        self.events_rejected = Counter(
            "la_events_rejected",
            "Valid input events refused by a rule, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "la_dead_letters",
            "Input messages that could not be read or validated",
            registry=self.registry,
        )
        self.duplicates = Counter(
            "la_duplicates",
            "Input events delivered again and not re-applied",
            registry=self.registry,
        )
        self.outputs_published = Counter(
            "la_outputs_published",
            "Output messages acknowledged by the broker, by topic",
            ["topic"],
            registry=self.registry,
        )
        self.batches = Counter("la_batches", "Input batches processed", registry=self.registry)
        self.held_results = Gauge(
            "la_held_results",
            "Exam results waiting for their registration (R3.6)",
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "la_consumer_lag",
            "Records behind the end of each assigned input partition",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "la_ready",
            "1 while the consumer makes progress and Kafka and Redis answer, else 0",
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "la_batch_seconds",
            "Time to process one batch, decode to offsets committed",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.event_latency_seconds = Histogram(
            "la_event_latency_seconds",
            "Input record timestamp to its outputs acknowledged by the broker",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.redis_seconds = Histogram(
            "la_redis_seconds",
            "Redis round trips, by operation",
            ["operation"],
            buckets=_REDIS_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)


def observe_all(histogram: Histogram, amounts: Sequence[float]) -> None:
    """Observe every amount, as `histogram.observe` of each would: one increment per bucket hit
    and one of the sum, where prometheus_client's `observe` takes its locks and walks the bounds
    for each amount (a batch observes one per record). Falls back to `observe` if its internals
    (`_upper_bounds`, `_buckets`, `_sum`) are not as this reads them."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if not (
        isinstance(bounds, list)
        and isinstance(buckets, list)
        and len(bounds) == len(buckets)
        and total is not None
    ):
        for amount in amounts:
            histogram.observe(amount)
        return
    if not amounts:
        return
    total.inc(sum(amounts))
    # the first bound at or above the amount, as observe picks it (the last bound is +Inf)
    for at, count in Tally(bisect_left(bounds, amount) for amount in amounts).items():
        buckets[at].inc(count)
