"""The reference consumers the benchmark compares the service with, run as subprocesses.

    python bench/references.py naive      --bootstrap HOST:PORT --redis URL --group G --out TOPIC
    python bench/references.py ceiling    --bootstrap HOST:PORT --group G --out TOPIC
    python bench/references.py librdkafka --bootstrap HOST:PORT --group G --out TOPIC

naive:   the per-message handler: for every record, decode it, await ONE Redis call (an EVAL
         that records the event id and bumps a per-student counter) and await ONE confirmed
         publish (send_and_wait). Offsets are committed after every fetched chunk (which is
         generous to it: a framework committing per message would be slower still).
ceiling: a bare pass-through: no Redis, no decoding, no logic. Each fetched batch (up to
         --max-records) is re-published one output per input without awaiting each send, the
         acknowledgements are awaited together, then the batch's offsets are committed.
librdkafka: the same pass-through through librdkafka (confluent-kafka), the fastest Kafka client
         for Python: the broker's limit for this workload. Each consumed batch is produced,
         flushed (every acknowledgement received), then its offsets are committed.

Both tune Python's GC as the service does (LA_GC_THRESHOLD, runtime.tune_gc) once started, so
the three differ only in what they do per event. Both stop cleanly on SIGTERM. Progress is
observed from outside through committed offsets, the same way as for the service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from learning_account.runtime import tune_gc
from learning_account.settings import Settings
from learning_account.wire import INPUT_TOPICS
from learning_account_dev.devstack import PRODUCER_KWARGS, leave_group_if_first_generation

_NAIVE_SCRIPT = """
local added = redis.call('SADD', KEYS[1], ARGV[1])
if added == 0 then return -1 end
return redis.call('HINCRBY', KEYS[2], 'events', 1)
"""


def _consumer(args: argparse.Namespace) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *INPUT_TOPICS,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        max_poll_records=args.max_records,
    )


async def _commit(consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[Any]]) -> None:
    offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
    if offsets:
        await consumer.commit(offsets)


async def naive(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(args.redis)
    script = redis.register_script(_NAIVE_SCRIPT)
    consumer = _consumer(args)
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, **PRODUCER_KWARGS)
    await producer.start()
    await consumer.start()
    tune_gc(Settings.from_env().gc_threshold)
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=args.max_records)
            for records in batch.values():
                for record in records:
                    event = json.loads(record.value)
                    student = event["data"]["student_id"]
                    count = await script(
                        keys=[f"naive:{{{student}}}:seen", f"naive:{{{student}}}:account"],
                        args=[f"{event['source']}|{event['id']}"],
                    )
                    output = json.dumps(
                        {"student_id": student, "events": count, "caused_by": event["id"]}
                    ).encode()
                    await producer.send_and_wait(args.out, output, key=record.key)
            await _commit(consumer, batch)
    finally:
        await leave_group_if_first_generation(consumer)
        await consumer.stop()
        await producer.stop()
        await redis.aclose()


async def ceiling(args: argparse.Namespace, stop: asyncio.Event) -> None:
    consumer = _consumer(args)
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=5, **PRODUCER_KWARGS)
    await producer.start()
    await consumer.start()
    tune_gc(Settings.from_env().gc_threshold)
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50, max_records=args.max_records)
            pending = [
                await producer.send(args.out, record.value, key=record.key)
                for records in batch.values()
                for record in records
            ]
            if pending:
                await asyncio.gather(*pending)
            await _commit(consumer, batch)
    finally:
        await leave_group_if_first_generation(consumer)
        await consumer.stop()
        await producer.stop()


def librdkafka(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Synchronous: librdkafka runs its own threads; `stop` is set from the signal handler."""
    from confluent_kafka import Consumer, KafkaException, Producer

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
        }
    )
    # acks=all without idempotence, as PRODUCER_KWARGS (Tansu refuses idempotent producers)
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "acks": "all",
            "enable.idempotence": False,
            "linger.ms": 5,
        }
    )
    consumer.subscribe(list(INPUT_TOPICS))
    tune_gc(Settings.from_env().gc_threshold)
    try:
        while not stop.is_set():
            messages = consumer.consume(num_messages=args.max_records, timeout=0.05)
            failed = [message.error() for message in messages if message.error()]
            if failed:
                raise KafkaException(failed[0])
            for message in messages:
                producer.produce(args.out, message.value(), message.key())
            if messages:
                producer.flush()
                consumer.commit(asynchronous=False)
    finally:
        consumer.close()  # leaves the group
        producer.flush(10)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["naive", "ceiling", "librdkafka"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--group", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-records", type=int, default=500)
    args = parser.parse_args()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.kind == "librdkafka":
        await asyncio.to_thread(librdkafka, args, stop)
        return
    run = naive if args.kind == "naive" else ceiling
    with contextlib.suppress(asyncio.CancelledError):
        await run(args, stop)


if __name__ == "__main__":
    asyncio.run(main())
