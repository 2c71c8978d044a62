"""Rebuild every account from the input topics' history into a Redis (normally an empty one).

The history is read from the beginning of every partition of the three input topics until
caught up, and applied in the order the live service applies it (ordering.in_record_order),
with held results timed out as the live service does: once the merge has passed their deadline
in record time, and at the end by the clock. It streams: each partition is read in chunks and the
merge holds one chunk per partition of one partition number, so memory does not grow with the
history's length. Nothing is published: downstream systems already received the outputs when the
events were live.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from learning_account.adapters.kafka_records import install_tolerant_reading, unreadable
from learning_account.bootstrap import (
    KafkaClients,
    account_store,
    kafka_consumer,
    processor,
    redis_for,
)
from learning_account.processing.ordering import Chunks, in_record_order
from learning_account.processing.outputs import OutputMessage
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account.settings import Settings
from learning_account.wire import INPUT_TOPICS

CHUNK_RECORDS = 500
"""Records read from one partition at a time (the merge holds at most one chunk per partition)."""
FETCH_BYTES = 256 * 1024
"""What the consumer fetches ahead per partition and per response: with the chunks, the bound
on memory (some brokers answer up to the response bound for one partition)."""


@dataclass
class RebuildReport:
    records: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0


async def input_partitions(consumer: AIOKafkaConsumer) -> list[TopicPartition]:
    """Every partition of the three input topics."""
    await consumer.topics()  # refreshes the metadata
    return [
        TopicPartition(topic, number)
        for topic in INPUT_TOPICS
        for number in sorted(consumer.partitions_for_topic(topic) or ())
    ]


async def read_partition(
    consumer: AIOKafkaConsumer,
    partition: TopicPartition,
    *,
    chunk: int = CHUNK_RECORDS,
    idle_ms: int = 30_000,
) -> AsyncIterator[list[InputRecord]]:
    """One partition's records from where the consumer stands until it is caught up, a chunk at
    a time. The end is the high mark of fetch responses (a broker may answer ListOffsets with
    less than the end of its last batch)."""
    idle_since = time.monotonic()
    while True:
        mark = consumer.highwater(partition)
        if mark is not None and await consumer.position(partition) >= mark:
            return
        fetched = await consumer.getmany(partition, timeout_ms=200, max_records=chunk)
        records = fetched.get(partition, [])
        for failure in filter(None, map(unreadable, records)):
            raise failure.error  # the live service retries it: a rebuild never skips
        if not records:
            if (time.monotonic() - idle_since) * 1000 > idle_ms:
                raise TimeoutError(f"{partition} sent nothing for {idle_ms} ms before its end")
            continue
        idle_since = time.monotonic()
        yield [
            InputRecord(
                r.topic, r.partition, r.offset, r.key, r.value, r.timestamp, tuple(r.headers)
            )
            for r in records
        ]


@asynccontextmanager
async def read_history(
    consumer: AIOKafkaConsumer,
) -> AsyncIterator[tuple[list[Chunks], int]]:
    """A reader per input partition, from its beginning, and about how many records they hold.

    Starts `consumer` (made by `history_consumer`); its maker stops it."""
    install_tolerant_reading()  # headers are read as the live service reads them
    await consumer.start()
    partitions = await input_partitions(consumer)
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    ends = await consumer.end_offsets(partitions)  # an estimate, for the progress bar
    starts = await consumer.beginning_offsets(partitions)
    total = sum(ends[tp] - starts[tp] for tp in partitions)
    yield [(tp.topic, tp.partition, read_partition(consumer, tp)) for tp in partitions], total


def history_consumer(settings: Settings, kafka: KafkaClients | None = None) -> AIOKafkaConsumer:
    """A consumer of no group, fetching little ahead (see FETCH_BYTES)."""
    return kafka_consumer(
        settings,
        kafka=kafka,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=FETCH_BYTES,
        fetch_max_bytes=FETCH_BYTES,
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
    consumer = history_consumer(settings, kafka)
    try:
        pipeline = processor(settings, account_store(settings, redis), live=False)
        async with read_history(consumer) as (partitions, total):
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
        await consumer.stop()
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
