"""Rebuild every account from the input topics' history into a Redis (normally an empty one).

The history is read from the beginning of every partition of the three input topics to its end
(where the partition's first fetch found it: `ops.reading`), by consumers of no group that commit
nothing, and applied in the order the live service applies it (ordering.in_record_order),
with held results timed out as the live service does: once the merge has passed their deadline
in record time, and at the end by the clock. It streams: each partition is read in chunks and the
merge holds one chunk per partition of one partition number, so memory does not grow with the
history's length. Nothing is published: downstream systems already received the outputs when the
events were live.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from learning_account.adapters.kafka_records import input_record
from learning_account.bootstrap import (
    KafkaClients,
    account_store,
    kafka_consumer,
    processor,
    redis_for,
)
from learning_account.ops.reading import READER_CONFIG, close, partitions_of, read_to_end
from learning_account.processing.ordering import Chunks, in_record_order
from learning_account.processing.outputs import OutputMessage
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account.settings import Settings
from learning_account.wire import INPUT_TOPICS

if TYPE_CHECKING:
    from confluent_kafka import Consumer, TopicPartition

CHUNK_RECORDS = 500
"""Records read from one partition at a time (the merge holds at most one chunk per partition)."""
FETCH_BYTES = 256 * 1024
"""What a partition's consumer fetches and queues ahead: with the chunks, the bound on memory."""

Readers = Callable[[], "Consumer"]
"""Makes a consumer of no group for one partition's history (`history_consumer`)."""


@dataclass
class RebuildReport:
    records: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0


async def input_partitions(consumer: Consumer) -> list[TopicPartition]:
    """Every partition of the three input topics."""
    return await partitions_of(consumer, INPUT_TOPICS)


async def read_partition(
    consumer: Consumer,
    partition: TopicPartition,
    *,
    chunk: int = CHUNK_RECORDS,
    idle_seconds: float = 30.0,
) -> AsyncIterator[list[InputRecord]]:
    """One partition's records from its offset (its beginning if unset) until its end, a chunk
    at a time; `consumer` (made by `history_consumer`) reads nothing else meanwhile."""
    async for records in read_to_end(consumer, [partition], chunk=chunk, idle_seconds=idle_seconds):
        yield [input_record(message) for message in records]


async def _partition_history(
    readers: Readers, partition: TopicPartition
) -> AsyncIterator[list[InputRecord]]:
    """`read_partition` with a consumer of its own, made when the merge first reads it."""
    consumer = readers()
    try:
        async for records in read_partition(consumer, partition):
            yield records
    finally:
        await close(consumer)


@asynccontextmanager
async def read_history(readers: Readers) -> AsyncIterator[tuple[list[Chunks], int]]:
    """A reader per input partition, from its beginning, and about how many records they hold.

    Each partition is read by a consumer of its own (`readers` makes them), so each is read as
    far as the merge asks, no further."""
    from confluent_kafka import TopicPartition

    consumer = readers()
    try:
        partitions = await input_partitions(consumer)
        loop = asyncio.get_running_loop()
        total = 0
        for tp in partitions:  # an estimate, for the progress bar
            low, high = await loop.run_in_executor(
                None, partial(consumer.get_watermark_offsets, tp, timeout=10)
            )
            total += max(0, high - low)
    finally:
        await close(consumer)
    yield (
        [
            (
                tp.topic,
                tp.partition,
                _partition_history(readers, TopicPartition(tp.topic, tp.partition)),
            )
            for tp in partitions
        ],
        total,
    )


def history_consumer(settings: Settings, kafka: KafkaClients | None = None) -> Consumer:
    """A consumer of no group, fetching little ahead (see FETCH_BYTES)."""
    return kafka_consumer(
        settings,
        kafka=kafka,
        config={
            **READER_CONFIG,
            "max.partition.fetch.bytes": FETCH_BYTES,
            "fetch.max.bytes": FETCH_BYTES,
            # which librdkafka requires to be no more than fetch.max.bytes (a consumer produces
            # nothing: it bounds no record; a larger one is still fetched, whole)
            "message.max.bytes": FETCH_BYTES,
            "queued.max.messages.kbytes": FETCH_BYTES // 1024,
        },
    )


async def rebuild(
    settings: Settings,
    *,
    redis_url: str | None = None,
    progress: Callable[[int, int], Any] | None = None,
    kafka: KafkaClients | None = None,
) -> RebuildReport:
    started = time.monotonic()
    redis = await redis_for(settings, redis_url)
    report = RebuildReport()
    try:
        pipeline = processor(settings, account_store(settings, redis), live=False)
        readers = partial(history_consumer, settings, kafka)
        async with read_history(readers) as (partitions, total):
            records = in_record_order(partitions, round(time.time() * 1000))
            batch: list[InputRecord] = []
            async for record in records:
                batch.append(record)
                if len(batch) == settings.batch_max_records:
                    await _apply(pipeline, batch, report, total, progress)
            if batch:
                await _apply(pipeline, batch, report, total, progress)
        while await pipeline.sweep_held(_nowhere):
            pass  # caught up: what the clock has timed out
    finally:
        await redis.aclose()
    report.seconds = round(time.monotonic() - started, 3)
    return report


async def _apply(
    processor: Processor,
    batch: list[InputRecord],
    report: RebuildReport,
    total: int,
    progress: Callable[[int, int], Any] | None,
) -> None:
    outcome = await processor.process(batch)
    # the batch's last record time: the merge of its partition number has passed it
    await processor.sweep_held(_nowhere, until=(batch[-1].timestamp_ms or 0) / 1000)
    report.records += len(batch)
    report.applied += sum(outcome.applied.values())
    report.duplicates += outcome.duplicates
    report.dead_lettered += outcome.dead_lettered
    batch.clear()
    if progress is not None:
        progress(report.records, max(total, report.records))


async def _nowhere(messages: list[OutputMessage]) -> None:
    """A rebuild publishes nothing."""
