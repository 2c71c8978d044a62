"""Rebuild every account from the input topics' history into a Redis (normally an empty one).

The history is read from the beginning of every partition of the three input topics and applied
in arrival order: the partitions are merged by record timestamp (each partition's own order
kept), which is the order the live service saw them in as far as the broker can tell. Nothing is
published: downstream systems already received the outputs when the events were live.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from .clients import kafka_consumer, redis_for
from .kafka_records import install_tolerant_reading, unreadable
from .pipeline import InputRecord, Processor
from .settings import Settings
from .store import AccountStore
from .wire import INPUT_TOPICS


@dataclass
class RebuildReport:
    records: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0


async def read_history(settings: Settings, idle_ms: int = 1500) -> list[list[InputRecord]]:
    """Every record of the input topics, per partition, from the beginning to the high mark."""
    install_tolerant_reading()  # headers are read as the live service reads them
    consumer = kafka_consumer(settings, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, number)
            for topic in INPUT_TOPICS
            for number in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            await consumer.topics()  # refresh metadata once
            partitions = [
                TopicPartition(topic, number)
                for topic in INPUT_TOPICS
                for number in sorted(consumer.partitions_for_topic(topic) or ())
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        history: dict[TopicPartition, list[InputRecord]] = {tp: [] for tp in partitions}
        idle_since = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batch.values():
                for failure in filter(None, map(unreadable, records)):
                    raise failure.error  # the live service retries it: a rebuild never skips
            for tp, records in batch.items():
                history[tp].extend(
                    InputRecord(
                        r.topic,
                        r.partition,
                        r.offset,
                        r.key,
                        r.value,
                        r.timestamp,
                        tuple(r.headers),
                    )
                    for r in records
                )
            if batch:
                idle_since = time.monotonic()
            positions = [await consumer.position(tp) for tp in partitions]
            marks = [consumer.highwater(tp) for tp in partitions]
            caught_up = all(
                mark is not None and mark <= position
                for mark, position in zip(marks, positions, strict=True)
            )
            if caught_up and not batch:
                break
            if not batch and (time.monotonic() - idle_since) * 1000 > idle_ms * 20:
                break  # the broker stopped answering with data; take what we have
        return list(history.values())
    finally:
        await consumer.stop()


def in_arrival_order(partitions: list[list[InputRecord]]) -> list[InputRecord]:
    keyed = [
        [((record.timestamp_ms or 0), index, record.offset, record) for record in records]
        for index, records in enumerate(partitions)
    ]
    return [item[3] for item in heapq.merge(*keyed)]


async def rebuild(
    settings: Settings,
    *,
    redis_url: str | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> RebuildReport:
    started = time.monotonic()
    records = in_arrival_order(await read_history(settings))
    redis = await redis_for(settings, redis_url)
    report = RebuildReport(records=len(records))
    try:
        processor = Processor(
            AccountStore(redis, outbox_retention_seconds=settings.outbox_retention_seconds),
            settings.policy,
            max_message_bytes=settings.kafka_max_message_bytes,
            allowed_sources=settings.allowed_sources,
        )
        size = settings.batch_max_records
        for start in range(0, len(records), size):
            batch = await processor.process(records[start : start + size])
            report.applied += sum(batch.applied.values())
            report.duplicates += batch.duplicates
            report.dead_lettered += batch.dead_lettered
            if progress is not None:
                progress(min(start + size, len(records)), len(records))
    finally:
        await redis.aclose()
    report.seconds = round(time.monotonic() - started, 3)
    return report
