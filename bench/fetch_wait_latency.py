"""How long a record waits in the broker before an aiokafka consumer sees it, by fetch_max_wait_ms.

    .venv/bin/python bench/fetch_wait_latency.py [--rate 2000] [--seconds 5]

A producer paced at --rate events/s and three consumers (fetch_max_wait_ms = 500, the aiokafka and
FastStream default the service runs with; 100; 10), each in the service's loop shape
(getmany(timeout_ms=50, max_records=500)), against a fresh Tansu. Prints p50/p99 of
(time seen - record timestamp) per setting: the part of end-to-end latency due to fetching alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from learning_account_dev.devstack import (
    PRODUCER_KWARGS,
    ensure_topics,
    free_port,
    start_tansu,
    wait_for_kafka,
)

WAITS = (500, 100, 10)


async def main(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="la-fetchwait-"))
    port = free_port()
    broker = start_tansu(port, work)
    bootstrap = f"127.0.0.1:{port}"
    try:
        await wait_for_kafka(bootstrap)
        await ensure_topics(bootstrap, {"fetch-wait": 3})
        seen: dict[int, list[float]] = {wait: [] for wait in WAITS}
        consumers = []
        for wait in WAITS:
            consumer = AIOKafkaConsumer(
                "fetch-wait",
                bootstrap_servers=bootstrap,
                group_id=None,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=wait,
            )
            await consumer.start()
            consumers.append((wait, consumer))
        stop = asyncio.Event()

        async def read(wait: int, consumer: AIOKafkaConsumer) -> None:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=50, max_records=500)
                now = time.time() * 1000
                for records in batch.values():
                    seen[wait].extend(now - record.timestamp for record in records)

        readers = [asyncio.create_task(read(w, c)) for w, c in consumers]
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_KWARGS)
        await producer.start()
        total = int(args.rate * args.seconds)
        started = time.perf_counter()
        futures = []
        for n in range(0, total, 20):
            delay = started + n / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            for m in range(20):
                futures.append(await producer.send("fetch-wait", b"x" * 600, key=b"%d" % (n + m)))
        await asyncio.gather(*futures)
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.gather(*readers, return_exceptions=True)
        await producer.stop()
        for _, consumer in consumers:
            await consumer.stop()
        report = {}
        for wait, values in seen.items():
            values.sort()
            report[f"fetch_max_wait_ms={wait}"] = {
                "records": len(values),
                "p50_ms": values[len(values) // 2],
                "p99_ms": values[int(len(values) * 0.99)],
            }
        return report
    finally:
        broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
