"""The consumer: each batch librdkafka fetches, merged, applied, published, then committed.

Delivery is at-least-once with effectively-once effects:

    fetch a batch -> hold it in the merge of its partition number (ordering.Merge)
                  -> the records the merges release, in record-time order per partition number
                  -> Processor (Redis: load, decide, atomic write per student)
                  -> publish every output, await all acks -> commit the applied records' offsets

Held records are not committed. A batch that fails anywhere is rewound (every partition number
in it drops its held records and seeks back to its first unapplied record) and retried with
backoff; nothing is committed past it. A re-delivered batch is absorbed by the idempotency
digests and re-publishes the stored outputs.

The group member is librdkafka's (confluent-kafka) `Consumer`, driven by `GroupConsumer` from
one thread of its own: its blocking calls (fetch, commit, seek, committed offsets, close) run
there one after the other, in the order the loop issued them, while its local reads (position,
fetched high watermark) are answered on the loop. FastStream's subscriber of the input topics
(`BatchConsumer.subscribe`) only documents them (the AsyncAPI document): it is never started.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.subscriber.usecase import BatchSubscriber

from learning_account.adapters.kafka_records import input_record
from learning_account.adapters.publisher import Publisher
from learning_account.entrypoints.readiness import Health
from learning_account.observability.metrics import Metrics, observe_all
from learning_account.processing.ordering import LAGGING_WAIT_SECONDS, Merge
from learning_account.processing.pipeline import BatchReport, InputRecord, Processor
from learning_account.settings import Settings
from learning_account.wire import INPUT_TOPICS, InputEvent

log = logging.getLogger("learning_account")

# a failed batch is retried after 0.2 s, 0.4 s, … up to this: soon enough once Redis is back,
# rare enough that a batch that keeps failing costs next to nothing
MAX_RETRY_SECONDS = 5.0


class Partition(NamedTuple):
    """A topic-partition."""

    topic: str
    partition: int


Rebalanced = Callable[[Sequence[Partition]], None]


class GroupConsumer:
    """The service's member of the consumer group: a librdkafka `Consumer` of the input topics.

    Its blocking calls run on one thread of its own, in the order they are made (librdkafka's
    consumer is not to be called from two threads at once); `assignment`, `position` and
    `highwater` are local reads, answered at once. The rebalance callbacks run on that thread,
    inside a fetch; what they report reaches the loop before the fetch returns.
    """

    def __init__(self, config: Mapping[str, Any], topics: Sequence[str]) -> None:
        self.config = dict(config)
        self.topics = list(topics)
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-group")
        self._consumer: Consumer | None = None
        self._assigned: set[Partition] = set()
        self._start: dict[Partition, int] = {}
        """Per assigned partition: the group's committed offset when it was assigned."""

    async def _run(self, call: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call, *args)

    async def start(self, *, assigned: Rebalanced, revoked: Rebalanced) -> None:
        """Join the group (librdkafka connects and rejoins in the background from here)."""
        loop = asyncio.get_running_loop()

        def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            taken = [Partition(tp.topic, tp.partition) for tp in partitions]
            try:
                start = {
                    Partition(tp.topic, tp.partition): tp.offset
                    for tp in consumer.committed(partitions, timeout=5)
                    if tp.offset >= 0
                }
            except KafkaException as error:
                log.info("committed offsets of the assigned partitions unknown (%r)", error)
                start = {}
            loop.call_soon_threadsafe(self._rebalanced, taken, start, assigned)

        def on_revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            gone = [Partition(tp.topic, tp.partition) for tp in partitions]
            loop.call_soon_threadsafe(self._rebalanced, gone, None, revoked)

        def subscribe() -> None:
            self._consumer = Consumer(self.config)
            self._consumer.subscribe(
                self.topics, on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke
            )

        await self._run(subscribe)

    def _rebalanced(
        self,
        partitions: list[Partition],
        start: dict[Partition, int] | None,
        then: Rebalanced,
    ) -> None:
        if start is None:
            self._assigned.difference_update(partitions)
            for partition in partitions:
                self._start.pop(partition, None)
        else:
            self._assigned.update(partitions)
            self._start.update(start)
        then(partitions)

    @property
    def consumer(self) -> Consumer:
        if self._consumer is None:
            raise RuntimeError("the group consumer is not started")
        return self._consumer

    async def batch(self, max_records: int, timeout: float) -> list[Message]:  # noqa: ASYNC109
        """Up to `max_records` records (or errors) as soon as there is one, waiting `timeout`
        seconds at most for the first."""
        consumer = self.consumer

        def fetch() -> list[Message]:
            first = consumer.poll(timeout)
            if first is None:
                return []
            if max_records == 1:
                return [first]
            return [first, *consumer.consume(max_records - 1, 0)]

        return await self._run(fetch)  # type: ignore[no-any-return]

    def assignment(self) -> set[Partition]:
        return set(self._assigned)

    def owns(self, partition: Partition) -> bool:
        """Whether the partition is assigned to this member."""
        return partition in self._assigned

    def highwater(self, partition: Partition) -> int | None:
        """The partition's end as the last fetch saw it; None before one."""
        return self._watermarks(partition)[1]

    def position(self, partition: Partition) -> int | None:
        """The offset of the next record handed out: the last one handed out + 1, else where the
        group stood when the partition was assigned, else (nothing committed: the earliest
        record) the partition's start as the last fetch saw it; None if unknown."""
        if self._consumer is None or partition not in self._assigned:
            return None
        (found,) = self._consumer.position([TopicPartition(partition.topic, partition.partition)])
        if found.offset >= 0:
            return int(found.offset)
        start = self._start.get(partition)
        return start if start is not None else self._watermarks(partition)[0]

    def _watermarks(self, partition: Partition) -> tuple[int | None, int | None]:
        if self._consumer is None:
            return None, None
        low, high = self._consumer.get_watermark_offsets(
            TopicPartition(partition.topic, partition.partition), cached=True
        )
        return (low if low >= 0 else None), (high if high >= 0 else None)

    async def committed(self, partition: Partition) -> int | None:
        """The group's committed offset of the partition, None if it has none."""
        consumer = self.consumer
        tp = TopicPartition(partition.topic, partition.partition)
        (found,) = await self._run(lambda: consumer.committed([tp], timeout=5))
        return int(found.offset) if found.offset >= 0 else None

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Commit these offsets (synchronously: returns once the broker stored them)."""
        consumer = self.consumer
        partitions = [TopicPartition(p.topic, p.partition, offset) for p, offset in offsets.items()]
        for found in await self._run(
            lambda: consumer.commit(offsets=partitions, asynchronous=False)
        ):
            if found.error is not None:
                raise KafkaException(found.error)

    async def seek(self, partition: Partition, offset: int) -> None:
        consumer = self.consumer
        tp = TopicPartition(partition.topic, partition.partition, offset)
        await self._run(consumer.seek, tp)

    async def close(self) -> None:
        """Leave the group (librdkafka's close sends LeaveGroup) and end the thread."""
        consumer, self._consumer = self._consumer, None
        try:
            if consumer is not None:
                await self._run(consumer.close)
        finally:
            self._assigned.clear()
            self._thread.shutdown(wait=False)


class BatchConsumer:
    """The input topics' batch loop, and the merges it holds records in.

    One batch at a time (`in_flight`): the loop (fetch and apply), the merges' waits and the
    held-result sweeper take turns, so a student's outputs go out in commit order and no seek
    of a rewind overlaps a fetch.
    """

    def __init__(
        self,
        processor: Processor,
        publisher: Publisher,
        health: Health,
        metrics: Metrics,
        *,
        max_records: int = 500,
        timeout_ms: int = 50,
    ) -> None:
        self.processor = processor
        self.publisher = publisher
        self.health = health
        self.metrics = metrics
        self.max_records = max_records
        self.timeout = timeout_ms / 1000
        self.consumer: GroupConsumer | None = None
        """The group member while the loop runs, else None."""
        self.in_flight = asyncio.Lock()
        self.committed: dict[Partition, int] = {}
        """Per topic-partition, the offset this member last committed (or found committed)."""
        self.stop_requested = asyncio.Event()
        self._merges: dict[int, Merge] = {}
        self._waiting: dict[int, float] = {}
        """Per partition number: since when (monotonic) its merge waits for a lagging topic."""
        self._loop: asyncio.Task[None] | None = None
        self.applying = False
        """Whether fetched records are being held or applied now (not while a fetch waits)."""
        self._drained = 0.0
        """When (monotonic) a fetch last handed out every record librdkafka had fetched."""

    def subscribe(self, broker: KafkaBroker, settings: Settings) -> BatchSubscriber:
        """Declare the input topics' subscriber on the broker, for the AsyncAPI document only
        (the broker is never started: the group member is `GroupConsumer`)."""
        subscriber = broker.subscriber(
            *INPUT_TOPICS,
            group_id=settings.consumer_group,
            batch=True,
            max_records=settings.batch_max_records,
            batch_timeout_ms=settings.batch_timeout_ms,
            auto_offset_reset="earliest",
            title="learning-account-inputs",
            description=(
                "Registrations, exam results and degrees, deregistrations (CloudEvents 1.0, "
                "structured JSON, keyed by student id)."
            ),
        )
        subscriber(_inputs)
        return subscriber

    async def start(self, consumer: GroupConsumer) -> None:
        """Join the group with `consumer` and run the batch loop until `stop`."""
        await consumer.start(assigned=self.drop_merges, revoked=self.drop_merges)
        self.consumer = consumer
        self._loop = asyncio.create_task(self.run(consumer), name="batches")

    async def run(self, consumer: GroupConsumer) -> None:
        while not self.health.stopping:
            async with self.in_flight:
                if self.health.stopping:
                    return
                try:
                    messages = await consumer.batch(self.max_records, self.timeout)
                except Exception as error:  # librdkafka reports and retries by itself
                    log.warning("Kafka fetch failed (%r)", error)
                    await asyncio.sleep(1)
                    continue
                if len(messages) < self.max_records:
                    self._drained = time.monotonic()
                if messages:
                    self.applying = True
                    try:
                        await self.handle(consumer, messages)
                    finally:
                        self.applying = False

    async def close(self) -> None:
        """After `stop`: end the loop, leave the group, close the consumer."""
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await consumer.close()

    def holds(self, partition: Partition) -> bool:
        """Whether a merge holds read, not yet applied records of the topic-partition."""
        merge = self._merges.get(partition.partition)
        return merge is not None and merge.holds(partition.topic)

    def merge(self, number: int) -> Merge | None:
        return self._merges.get(number)

    async def handle(self, consumer: GroupConsumer, messages: Sequence[Message]) -> None:
        """Hold a fetched batch in the merges and apply what they release (under `in_flight`).

        A record librdkafka cannot read (a corrupt batch: `KafkaError._BAD_MSG`) arrives as an
        error at its offset, and again on every fetch from there: the batch is rewound and
        retried, nothing of that partition is skipped.
        """
        records: list[InputRecord] = []
        unreadable: list[InputRecord] = []
        failure: BaseException | None = None
        try:
            for message in messages:
                error = message.error()
                if error is None:
                    records.append(input_record(message))
                elif (at := _error_position(consumer, message)) is not None:
                    failure = KafkaException(error)
                    unreadable.append(at)
                else:  # the client's own report (a broker down, …): it retries by itself
                    log.warning("Kafka consumer error (%s)", error)
        except Exception as error:  # read again: nothing of the batch is skipped
            failure = error
            records = [at for message in messages if (at := _position_of(message)) is not None]
        if failure is not None:
            await self.batch_failed(consumer, [*records, *unreadable], failure)
            return
        if not records:
            return
        clock_ms = round(time.time() * 1000)
        merges = self._merges
        for record in records:
            merge = merges.get(record.partition)
            if merge is None:
                merge = merges[record.partition] = Merge(record.partition)
            merge.add(record, clock_ms)
        await self._apply_released(consumer)

    async def _apply_released(self, consumer: GroupConsumer) -> None:
        """Apply what the merges release, publish, commit (the caller holds `in_flight`)."""
        started = time.perf_counter()
        records = self._release(consumer)
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

    def _release(self, consumer: GroupConsumer) -> list[InputRecord]:
        """The records every merge may release now: it stops at a topic-partition it holds nothing
        of while that one is lagging (its position below its fetched high watermark).

        What librdkafka fetched and has not handed out yet comes with a coming batch: it is
        always waited for. librdkafka does not say which partitions its queue holds records of,
        only when a fetch emptied it: a merge waits LAGGING_WAIT_SECONDS at most once one did
        after the wait began (what it waits for was not fetched then)."""
        now = time.monotonic()
        released: list[InputRecord] = []
        for number, merge in self._merges.items():
            if not merge.holding():
                self._waiting.pop(number, None)
                continue
            since = self._waiting.get(number)
            waited_out = (
                since is not None and now - since >= LAGGING_WAIT_SECONDS and self._drained >= since
            )
            waiting_for = []
            if not waited_out:
                # one that holds records is waited for too, once the merge released them all
                waiting_for = [
                    topic for topic in INPUT_TOPICS if is_lagging(consumer, topic, number)
                ]
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
                    self.applying = True
                    try:
                        await self._apply_released(consumer)
                    finally:
                        self.applying = False

    def drop_merges(self, partitions: Sequence[Partition]) -> None:
        """Forget what the merges of these partition numbers hold (revoked, or read again)."""
        for number in {partition.partition for partition in partitions}:
            self._merges.pop(number, None)
            self._waiting.pop(number, None)

    async def batch_failed(
        self, consumer: GroupConsumer, records: Sequence[InputRecord], error: BaseException
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
        await self.rewind(consumer, records)
        with contextlib.suppress(TimeoutError):  # a stop ends the wait: the batch is rewound
            await asyncio.wait_for(self.stop_requested.wait(), delay)

    async def _commit(self, consumer: GroupConsumer, records: Sequence[InputRecord]) -> None:
        ends: dict[tuple[str, int], int] = {}  # a Partition per topic-partition, not per record
        for record in records:
            key = (record.topic, record.partition)
            end = record.offset + 1
            if end > ends.get(key, 0):
                ends[key] = end
        offsets = {Partition(topic, number): end for (topic, number), end in ends.items()}
        try:
            await consumer.commit(offsets)
            self.committed.update(offsets)
        except (KafkaException, RuntimeError) as error:
            # partitions moved during a rebalance: their new owner re-reads and dedupes
            log.warning("offset commit failed (%r); the records will be re-delivered", error)

    async def rewind(self, consumer: GroupConsumer, records: Sequence[InputRecord]) -> None:
        """Seek every partition number of the records back to its first unapplied record."""
        unapplied = list(records)
        for number in {record.partition for record in records}:
            merge = self._merges.pop(number, None)
            self._waiting.pop(number, None)
            if merge is not None:
                unapplied.extend(merge.drop())
        first: dict[Partition, int] = {}
        for record in unapplied:
            partition = Partition(record.topic, record.partition)
            first[partition] = min(first.get(partition, record.offset), record.offset)
        for partition, offset in first.items():
            try:
                await consumer.seek(partition, offset)
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
        """The batch's metrics, each counted once per batch; the event latency (a histogram)
        observed per record."""
        metrics = self.metrics
        metrics.batches.inc()
        metrics.batch_seconds.observe(time.perf_counter() - started)
        for kind, count in report.applied.items():
            metrics.events_applied.labels(type=kind).inc(count)
        for reason, count in report.rejected.items():
            metrics.events_rejected.labels(reason=reason).inc(count)
        if report.dead_lettered:
            metrics.dead_letters.inc(report.dead_lettered)
        if report.duplicates:
            metrics.duplicates.inc(report.duplicates)
        now_ms = time.time() * 1000
        latencies = [
            max(0.0, (now_ms - stamp) / 1000)
            for stamp in (record.timestamp_ms for record in records)
            if stamp and stamp > 0
        ]
        observe_all(metrics.event_latency_seconds, latencies)
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


async def _inputs(body: list[InputEvent], msg: KafkaMessage) -> None:
    """The input topics' records as the AsyncAPI document describes them (never called)."""


def _position_of(message: Message) -> InputRecord | None:
    """Where a fetched record or a partition's read error stands, as a record to rewind to."""
    topic, number, offset = message.topic(), message.partition(), message.offset()
    if topic is None or number is None or offset is None or offset < 0:
        return None
    return InputRecord(topic, number, offset, None, None)


def _error_position(consumer: GroupConsumer, message: Message) -> InputRecord | None:
    """Where a partition's read error stands, as a record to rewind to; None for an error of
    the client, not of a partition.

    librdkafka reports a corrupt batch at its offset, then (reading on inside the batch) may
    report garbage at an offset read from its bytes: the partition is rewound no further than
    the next record this member was to read.
    """
    at = _position_of(message)
    if at is None:
        return None
    position = consumer.position(Partition(at.topic, at.partition))
    if position is not None and position < at.offset:
        return InputRecord(at.topic, at.partition, position, None, None)
    return at


def is_lagging(consumer: GroupConsumer, topic: str, number: int) -> bool:
    """Whether the assigned topic-partition has records to read that were not handed out yet:
    fetched (librdkafka's queue) or not; an assigned one fetched nothing of yet counts as such."""
    partition = Partition(topic, number)
    if not consumer.owns(partition):
        return False
    highwater = consumer.highwater(partition)
    if highwater is None:
        return True
    position = consumer.position(partition)
    return position is None or position < highwater


async def lagging(consumer: GroupConsumer, topic: str, number: int) -> bool:
    """`is_lagging`, for the held-result sweeper."""
    return is_lagging(consumer, topic, number)
