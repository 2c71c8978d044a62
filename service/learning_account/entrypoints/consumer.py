"""The consumer: each batch FastStream fetches, merged, applied, published, then committed.

Delivery is at-least-once with effectively-once effects:

    fetch a batch -> hold it in the merge of its partition number (ordering.Merge)
                  -> the records the merges release, in record-time order per partition number
                  -> Processor (Redis: load, decide, atomic write per student)
                  -> publish every output, await all acks -> commit the applied records' offsets

Held records are not committed. A batch that fails anywhere is rewound (every partition number
in it drops its held records and seeks back to its first unapplied record) and retried with
backoff; nothing is committed past it. A re-delivered batch is absorbed by the idempotency
digests and re-publishes the stored outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.subscriber.usecase import BatchSubscriber

from learning_account.adapters.kafka_records import unreadable
from learning_account.adapters.publisher import Publisher
from learning_account.entrypoints.readiness import Health
from learning_account.observability.metrics import Metrics
from learning_account.processing.ordering import LAGGING_WAIT_SECONDS, Merge
from learning_account.processing.pipeline import BatchReport, InputRecord, Processor
from learning_account.settings import Settings
from learning_account.wire import INPUT_TOPICS, InputEvent

log = logging.getLogger("learning_account")

# a failed batch is retried after 0.2 s, 0.4 s, … up to this: soon enough once Redis is back,
# rare enough that a batch that keeps failing costs next to nothing
MAX_RETRY_SECONDS = 5.0


class BatchConsumer:
    """The handler of the input topics' subscriber, and the merges it holds records in.

    One batch at a time (`in_flight`): the handler, the merges' waits and the held-result
    sweeper take turns, so a student's outputs go out in commit order.
    """

    def __init__(
        self, processor: Processor, publisher: Publisher, health: Health, metrics: Metrics
    ) -> None:
        self.processor = processor
        self.publisher = publisher
        self.health = health
        self.metrics = metrics
        self.subscriber: BatchSubscriber | None = None
        self.in_flight = asyncio.Lock()
        self.committed: dict[TopicPartition, int] = {}
        """Per topic-partition, the offset this member last committed (or found committed)."""
        self.stop_requested = asyncio.Event()
        self._merges: dict[int, Merge] = {}
        self._waiting: dict[int, float] = {}
        """Per partition number: since when (monotonic) its merge waits for a lagging topic."""

    def subscribe(self, broker: KafkaBroker, settings: Settings) -> BatchSubscriber:
        """Declare the input topics' subscriber on the broker, with this handler."""
        subscriber = broker.subscriber(
            *INPUT_TOPICS,
            group_id=settings.consumer_group,
            batch=True,
            max_records=settings.batch_max_records,
            batch_timeout_ms=settings.batch_timeout_ms,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            auto_offset_reset="earliest",
            # offsets are committed by hand, only after Redis and the output acks (below)
            ack_policy=AckPolicy.MANUAL,
            decoder=_raw_records,
            parser=self.parse,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            # partition p of every input topic on one member: one student's events meet there
            partition_assignment_strategy=(RangePartitionAssignor,),
            listener=_DropMerges(self),
            title="learning-account-inputs",
            description=(
                "Registrations, exam results and degrees, deregistrations (CloudEvents 1.0, "
                "structured JSON, keyed by student id)."
            ),
        )
        subscriber(self.handle)
        self.subscriber = subscriber
        return subscriber

    @property
    def consumer(self) -> Any:
        """The subscriber's aiokafka consumer once FastStream started it, else None."""
        return getattr(self.subscriber, "consumer", None)

    def holds(self, partition: TopicPartition) -> bool:
        """Whether a merge holds read, not yet applied records of the topic-partition."""
        merge = self._merges.get(partition.partition)
        return merge is not None and merge.holds(partition.topic)

    def merge(self, number: int) -> Merge | None:
        return self._merges.get(number)

    async def parse(self, records: tuple[ConsumerRecord[Any, Any], ...], original: Any) -> Any:
        """FastStream's batch parser on records it can take; a batch it fails on is rewound."""
        try:
            message = await original(
                tuple(_readable_headers(record) if record.headers else record for record in records)
            )
        except Exception as error:  # the handler is never called: rewind here, not skip
            await self.batch_failed(self.consumer, records, error)
            raise
        message.raw_message = records
        return message

    async def handle(self, body: list[InputEvent], msg: KafkaMessage) -> None:
        records: tuple[ConsumerRecord[Any, Any], ...] = msg.raw_message
        consumer = msg.consumer
        if self.health.stopping:
            self.rewind(consumer, records)
            return
        async with self.in_flight:
            try:
                for record in records:
                    if (failure := unreadable(record)) is not None:
                        raise failure.error
            except Exception as error:  # rewound with what its partitions hold: read again
                await self.batch_failed(consumer, records, error)
                return
            clock_ms = round(time.time() * 1000)
            for record in records:
                merge = self._merges.setdefault(record.partition, Merge(record.partition))
                merge.add(_input_record(record), clock_ms)
            await self._apply_released(consumer)

    async def _apply_released(self, consumer: Any) -> None:
        """Apply what the merges release, publish, commit (the caller holds `in_flight`)."""
        started = time.perf_counter()
        records = await self._release(consumer)
        if not records:
            return
        try:
            report = await self.processor.process(records)
            await self.publisher.publish([*report.outputs, *report.snapshots])
        except Exception as error:  # Redis or Kafka unavailable, or a bug: retry
            await self.batch_failed(consumer, records, error)
            return
        self.health.batch_applied()
        await self._commit(consumer, records)
        self._observe(report, records, started)

    async def _release(self, consumer: Any) -> list[InputRecord]:
        """The records every merge may release now: it stops at a topic-partition it holds nothing
        of while that one is lagging (for LAGGING_WAIT_SECONDS at most)."""
        now = time.monotonic()
        released: list[InputRecord] = []
        for number, merge in self._merges.items():
            if not merge.holding():
                self._waiting.pop(number, None)
                continue
            since = self._waiting.get(number)
            waited_out = since is not None and now - since >= LAGGING_WAIT_SECONDS
            waiting_for: list[str] = []
            for topic in INPUT_TOPICS:
                # what the client fetched comes with a coming batch: it is always waited for
                if _prefetched(consumer, topic, number) or (
                    not waited_out and await lagging(consumer, topic, number)
                ):
                    waiting_for.append(topic)
            released.extend(merge.release(waiting_for))
            if merge.holding():
                self._waiting.setdefault(number, now)
            else:
                self._waiting.pop(number, None)
        return released

    async def release_waiting(self) -> None:
        """Apply what merges hold once what they wait for comes, or the wait runs out, even when
        no batch arrives meanwhile."""
        while not self.health.stopping:
            await asyncio.sleep(0.1)
            consumer = self.consumer
            if consumer is None or self.health.failures or not self._waiting:
                continue  # a failing batch retries on its own, and its rewind dropped the merges
            async with self.in_flight:
                if not self.health.stopping:
                    await self._apply_released(consumer)

    def drop_merges(self, partitions: Sequence[TopicPartition]) -> None:
        """Forget what the merges of these partition numbers hold (revoked, or read again)."""
        for number in {partition.partition for partition in partitions}:
            self._merges.pop(number, None)
            self._waiting.pop(number, None)

    async def batch_failed(
        self,
        consumer: Any,
        records: Sequence[ConsumerRecord[Any, Any] | InputRecord],
        error: BaseException,
    ) -> None:
        """Rewind the batch and wait, longer each time in a row (readiness fails meanwhile)."""
        failures = self.health.batch_failed()
        delay = min(MAX_RETRY_SECONDS, 0.1 * 2 ** min(failures, 6))
        log.warning(
            "batch of %d records failed (%r); rewinding and retrying in %.1fs",
            len(records),
            error,
            delay,
        )
        self.rewind(consumer, records)
        with contextlib.suppress(TimeoutError):  # a stop ends the wait: the batch is rewound
            await asyncio.wait_for(self.stop_requested.wait(), delay)

    async def _commit(self, consumer: Any, records: Sequence[InputRecord]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            offsets[partition] = max(offsets.get(partition, 0), record.offset + 1)
        try:
            await consumer.commit(offsets)
            self.committed.update(offsets)
        except (CommitFailedError, KafkaError) as error:
            # partitions moved during a rebalance: their new owner re-reads and dedupes
            log.warning("offset commit failed (%r); the records will be re-delivered", error)

    def rewind(
        self, consumer: Any, records: Sequence[ConsumerRecord[Any, Any] | InputRecord]
    ) -> None:
        """Seek every partition number of the records back to its first unapplied record."""
        unapplied = list(records)
        for number in {record.partition for record in records}:
            merge = self._merges.pop(number, None)
            self._waiting.pop(number, None)
            if merge is not None:
                unapplied.extend(merge.drop())
        first: dict[TopicPartition, int] = {}
        for record in unapplied:
            partition = TopicPartition(record.topic, record.partition)
            first[partition] = min(first.get(partition, record.offset), record.offset)
        for partition, offset in first.items():
            try:
                consumer.seek(partition, offset)
            except Exception as error:  # no longer assigned: the new owner reads it
                log.info("cannot rewind %s (%r)", partition, error)

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 - the graceful stop's bound
        """Finish the batch in flight (within `timeout`) and take no other."""
        self.health.stop_serving()
        self.stop_requested.set()
        try:
            await asyncio.wait_for(self.in_flight.acquire(), timeout=timeout)
        except TimeoutError:
            log.warning("in-flight batch did not finish in time; it will be re-delivered")

    def _observe(self, report: BatchReport, records: Sequence[InputRecord], started: float) -> None:
        metrics = self.metrics
        metrics.batches.inc()
        metrics.batch_seconds.observe(time.perf_counter() - started)
        for kind, count in report.applied.items():
            metrics.events_applied.labels(type=kind).inc(count)
        for reason, count in report.rejected.items():
            metrics.events_rejected.labels(reason=reason).inc(count)
        metrics.dead_letters.inc(report.dead_lettered)
        metrics.duplicates.inc(report.duplicates)
        now_ms = time.time() * 1000
        for record in records:
            if record.timestamp_ms and record.timestamp_ms > 0:
                latency = (now_ms - record.timestamp_ms) / 1000
                metrics.event_latency_seconds.observe(max(0.0, latency))
        log.info(
            "batch applied",
            extra={
                "records": len(records),
                "applied": sum(report.applied.values()),
                "duplicates": report.duplicates,
                "dead_lettered": report.dead_lettered,
                "rejected": sum(report.rejected.values()),
                "outputs": len(report.outputs),
                "conflicts": report.conflicts,
                "seconds": round(time.perf_counter() - started, 4),
            },
        )


async def _raw_records(message: Any) -> list[Any]:
    """Keep FastStream from decoding: the pipeline decodes, and dead-letters what it can't."""
    return []


def _readable_headers(record: ConsumerRecord[Any, Any]) -> ConsumerRecord[Any, Any]:
    """The record as FastStream's batch parser can take it: it decodes every header as UTF-8
    (ag2ai/faststream#2458).

    A header with a null value, or a name or value that is not UTF-8, is left out of FastStream's
    view only; the record itself (`raw_message`) keeps every header.
    """
    headers = [(name, value) for name, value in record.headers if _is_text(name, value)]
    if len(headers) == len(record.headers):
        return record
    return dataclasses.replace(record, headers=headers)


def _is_text(name: str, value: bytes | None) -> bool:
    if value is None:
        return False
    try:
        name.encode()  # a name aiokafka could not decode arrives surrogate-escaped
        value.decode()
    except UnicodeError:
        return False
    return True


class _DropMerges(ConsumerRebalanceListener):  # type: ignore[misc]
    """On a rebalance, what the merges hold of revoked partitions is read again by their owner."""

    def __init__(self, batches: BatchConsumer) -> None:
        self.batches = batches

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.batches.drop_merges(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.batches.drop_merges(assigned)  # they are read from the committed offsets


def _prefetched(consumer: Any, topic: str, number: int) -> bool:
    """Whether the client holds fetched records of the topic-partition not yet handed out."""
    # aiokafka has no public view of its fetch buffer (no upstream issue asks for one): this
    # reads `Fetcher._records`, and says False if a release moves it
    buffered = getattr(getattr(consumer, "_fetcher", None), "_records", None)
    return isinstance(buffered, Mapping) and TopicPartition(topic, number) in buffered


async def lagging(consumer: Any, topic: str, number: int) -> bool:
    """Whether the topic-partition has records to read that are not fetched yet."""
    partition = TopicPartition(topic, number)
    highwater = consumer.highwater(partition)
    if highwater is None:
        return partition in consumer.assignment()  # assigned, nothing fetched yet
    try:
        position = await asyncio.wait_for(consumer.position(partition), timeout=0.5)
    except Exception:  # not assigned (any more), or no position yet
        return False
    return bool(position < highwater)


def _input_record(record: ConsumerRecord[Any, Any]) -> InputRecord:
    return InputRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        timestamp_ms=record.timestamp,
        headers=tuple(record.headers),
    )
