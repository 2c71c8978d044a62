"""Reading topic-partitions from a start to their end with a librdkafka consumer of no group.

The commands that read a topic's history (rebuild, restore, redrive) assign the partitions
themselves and commit nothing. A partition ends at the high watermark of its first fetch
response, as librdkafka keeps it (the broker's ListOffsets answer is not used: Tansu can answer
it with less than the end of its last batch): its last record before that mark, or librdkafka's
report of the partition's end (``enable.partition.eof``) at or past it, ends the reading.
Records appended later, such as the dead letters of messages a redrive re-publishes, are left
out.

Every blocking call of the consumer runs in a thread of the default executor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message, TopicPartition

READER_CONFIG: Mapping[str, Any] = {"enable.partition.eof": True}
"""What a consumer that `read_to_end` reads with is given (with `bootstrap.kafka_consumer`)."""

METADATA_TIMEOUT_SECONDS = 10.0


async def partitions_of(
    consumer: Consumer, topics: Collection[str], *, wait: float = METADATA_TIMEOUT_SECONDS
) -> list[TopicPartition]:
    """Every partition of those of `topics` that exist, in the order of `topics` then number.

    Asks the cluster for all its topics, which creates none (a request for one topic by name
    may have the broker create it)."""
    from confluent_kafka import TopicPartition

    loop = asyncio.get_running_loop()
    cluster = await loop.run_in_executor(None, lambda: consumer.list_topics(timeout=wait))
    found: list[TopicPartition] = []
    for topic in topics:
        metadata = cluster.topics.get(topic)
        if metadata is None or metadata.error is not None:
            continue
        found.extend(TopicPartition(topic, number) for number in sorted(metadata.partitions))
    return found


async def read_to_end(
    consumer: Consumer,
    partitions: Collection[TopicPartition],
    *,
    chunk: int = 500,
    idle_seconds: float = 30.0,
) -> AsyncIterator[list[Message]]:
    """The records of `partitions` from their offsets (the beginning when a partition's offset
    is unset) until each reached its end, up to `chunk` records at a time.

    `consumer` was made with `READER_CONFIG`; it is assigned `partitions`. Raises the error of
    a record librdkafka could not fetch, and TimeoutError when nothing came for `idle_seconds`
    before the end.
    """
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

    loop = asyncio.get_running_loop()
    start = [
        TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
        for tp in partitions
    ]
    if not start:
        return
    consumer.assign(start)
    reading = {(tp.topic, tp.partition) for tp in start}
    stop: dict[tuple[str, int], int] = {}
    idle_since = time.monotonic()
    while reading:
        fetched = await loop.run_in_executor(None, consumer.consume, chunk, 0.2)
        records: list[Message] = []
        for message in fetched:
            where = (message.topic() or "", message.partition() or 0)
            if where not in reading:
                continue
            if where not in stop:
                # the high watermark of the partition's first fetch response (kept by the
                # client, no request): before anything read here was acted on
                _low, high = consumer.get_watermark_offsets(TopicPartition(*where), cached=True)
                stop[where] = high if high >= 0 else message.offset() or 0
            offset = message.offset() or 0
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                if offset >= stop[where]:
                    reading.discard(where)
            elif error is not None:
                raise KafkaException(error)
            else:
                if offset < stop[where]:
                    records.append(message)
                if offset + 1 >= stop[where]:
                    reading.discard(where)
        if fetched:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > idle_seconds:
            raise TimeoutError(
                f"{sorted(reading)} sent nothing for {idle_seconds:.0f}s before their end"
            )
        if records:
            yield records


async def close(consumer: Consumer) -> None:
    """Leave nothing behind (a consumer of no group has nothing to commit or to leave)."""
    await asyncio.get_running_loop().run_in_executor(None, consumer.close)
