"""Whether the service is ready, and the lag and progress of every partition it is assigned.

Readiness (`/health/ready`, the `la_ready` gauge) fails while the service is not serving yet or
stopping, while a batch keeps failing, and while a partition with records to read made no
progress for LA_STALL_SECONDS; otherwise it asks Redis and Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from learning_account.observability.metrics import Metrics

if TYPE_CHECKING:
    from learning_account.entrypoints.consumer import BatchConsumer, Partition

log = logging.getLogger("learning_account")

PROBE_SECONDS = 2.0
"""How long a readiness probe waits for Redis or Kafka before it says not ready."""


class Health:
    """What readiness depends on, shared by the consumer, the partition watch and the HTTP API."""

    def __init__(
        self, metrics: Metrics, checks: Sequence[Callable[[], Awaitable[bool]]] = ()
    ) -> None:
        self.metrics = metrics
        self.checks = checks
        """Redis and Kafka pings, each given PROBE_SECONDS."""
        self.serving = False
        self.stopping = False
        self.failures = 0
        """Batches failed in a row."""
        self.stalled = False

    def batch_failed(self) -> int:
        """One more failure in a row (not ready meanwhile); how many there were in a row."""
        self.failures += 1
        self.metrics.ready.set(0)
        return self.failures

    def batch_applied(self) -> None:
        self.failures = 0
        if not self.stalled:
            self.metrics.ready.set(1)

    def progressed(self, *, stalled: bool) -> None:
        self.stalled = stalled
        if self.serving and not self.stopping:
            self.metrics.ready.set(0 if self.stalled or self.failures else 1)

    def start_serving(self) -> None:
        self.serving = True
        self.metrics.ready.set(1)

    def stop_serving(self) -> None:
        self.stopping = True
        self.metrics.ready.set(0)

    async def is_ready(self) -> bool:
        if self.stopping or self.failures or self.stalled or not self.serving:
            return False
        for check in self.checks:
            try:
                if not await asyncio.wait_for(check(), timeout=PROBE_SECONDS):
                    return False
            except Exception:
                return False
        return True


@dataclasses.dataclass(slots=True)
class _Progress:
    """The committed offset a partition was last seen at, and since when (monotonic seconds)."""

    offset: int | None
    since: float


class PartitionProgress:
    """Lag of every assigned partition (`la_consumer_lag`), and whether one with records to read
    is stuck (no committed progress for `stall_seconds`)."""

    def __init__(
        self, batches: BatchConsumer, health: Health, metrics: Metrics, *, stall_seconds: float
    ) -> None:
        self.batches = batches
        self.health = health
        self.metrics = metrics
        self.stall_seconds = stall_seconds
        self._partitions: dict[Partition, _Progress] = {}

    async def watch(self) -> None:
        """Check every few seconds until the service stops."""
        interval = min(5.0, self.stall_seconds / 4)
        while not self.health.stopping:
            consumer = self.batches.consumer
            if consumer is not None:
                try:
                    await self.check(consumer, time.monotonic())
                except Exception as error:
                    log.info("partition check failed (%r)", error)
            await asyncio.sleep(interval)

    async def check(self, consumer: Any, now: float) -> None:
        """One check of `consumer` (a `GroupConsumer`: assignment, committed offsets, fetched
        high watermarks, positions)."""
        committed = self.batches.committed
        assigned = set(consumer.assignment())
        for partition in set(self._partitions) - assigned:  # revoked: its new owner reports it
            del self._partitions[partition]
            committed.pop(partition, None)
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(partition.topic, str(partition.partition))
        stalled = []
        # no batch in flight or failing: the consumer's position counts too, as it passes the
        # control records of transactions, which no batch ever commits
        idle = not self.batches.applying and not self.health.failures
        for partition in assigned:
            held = self.batches.holds(partition)
            progress = self._partitions.get(partition)
            if progress is None:  # newly assigned: where the group stands on it
                offset = await asyncio.wait_for(consumer.committed(partition), timeout=5)
                if offset is not None and offset >= 0:
                    committed.setdefault(partition, offset)
                progress = self._partitions[partition] = _Progress(None, now)
            highwater = consumer.highwater(partition)
            if highwater is None:
                continue  # not fetched yet
            done = committed.get(partition)
            if idle and not held:  # a held record is read, not yet applied
                position = consumer.position(partition)
                if position is not None:
                    done = max(done or 0, position)
            lag = max(0, highwater - (done or 0))
            self.metrics.consumer_lag.labels(
                topic=partition.topic, partition=str(partition.partition)
            ).set(lag)
            if lag == 0 or done != progress.offset:
                progress.offset, progress.since = done, now
            elif now - progress.since >= self.stall_seconds:
                stalled.append(partition)
        if stalled and not self.health.stalled:
            log.warning(
                "no progress for %.0fs on %s",
                self.stall_seconds,
                ", ".join(f"{p.topic}[{p.partition}]" for p in sorted(stalled)),
            )
        self.health.progressed(stalled=bool(stalled))
