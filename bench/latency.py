"""Latency from input to output at a paced rate: the service's balance-changed, or the ceiling's
passed-through record, matched to the input event that caused it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from load import course_units
from processes import Stack

from learning_account.wire import BALANCE_CHANGED_TOPIC
from learning_account_dev import events as ev
from learning_account_dev.devstack import PRODUCER_KWARGS


def latency_stream(
    students: int, seed: int = 11, prefix: str = "lat-"
) -> list[tuple[str, bytes, bytes, str, bool]]:
    """Waves of 100 students: this wave's registrations, then the previous wave's results.

    A result is sent ~0.5 s after its registration at 2,000 events/s, the way a live system sees
    them (months apart), so results are not held waiting for their registration.
    Items: (topic, key, value, event id, expects a balance-changed).
    """
    rng = random.Random(seed)
    wave_size = 100
    waves = [
        [f"{prefix}{n:06d}" for n in range(start, min(start + wave_size, students))]
        for start in range(0, students, wave_size)
    ]
    stream: list[tuple[str, bytes, bytes, str, bool]] = []

    def item(event: dict[str, Any], expects: bool) -> tuple[str, bytes, bytes, str, bool]:
        key = event["data"]["student_id"].encode()
        return ev.topic_of(event), key, ev.to_bytes(event), event["id"], expects

    pending_results: list[tuple[str, bytes, bytes, str, bool]] = []
    for wave in [*waves, []]:
        regs = []
        results = []
        for sid in wave:
            units = course_units(rng, "L")
            event = ev.registration(sid, 2023, units, event_id=f"lat-{uuid.uuid4()}")
            regs.append(item(event, True))
            for code in units:
                outcome = "passed" if rng.random() < 0.85 else "failed"
                result = ev.exam_result(sid, 2023, code, outcome, event_id=f"lat-{uuid.uuid4()}")
                results.append(item(result, outcome == "passed"))
        rng.shuffle(pending_results)
        stream.extend(regs)
        stream.extend(pending_results)
        pending_results = results
    return stream


async def _warm_up(
    stack: Stack, sent: dict[str, float], seen: dict[str, float], timeout_s: float = 120
) -> None:
    """Send a few untimed events and wait for their outputs: the consumer has joined its group,
    read its position and warmed up before the timed stream starts."""
    warm = latency_stream(20, seed=12, prefix="lat-warm-")
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, **PRODUCER_KWARGS)
    await producer.start()
    try:
        for topic, key, value, event_id, _ in warm:
            sent[event_id] = time.time()
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
    expected = {event_id for *_, event_id, expects in warm if expects}
    deadline = time.perf_counter() + timeout_s
    while not expected <= seen.keys():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"no outputs for the warm-up events in {timeout_s:.0f} s")
        await asyncio.sleep(0.1)


async def _skip_to_end(consumer: AIOKafkaConsumer, timeout_s: float = 120) -> None:
    """Move every assigned partition to its high watermark, as the broker's fetch reports it."""
    moved: set[TopicPartition] = set()
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        await consumer.getmany(timeout_ms=200, max_records=1)  # fetches; the records are old
        partitions = consumer.assignment()
        for tp in partitions - moved:
            highwater = consumer.highwater(tp)
            if highwater is not None:
                consumer.seek(tp, highwater)
                moved.add(tp)
        if partitions and moved >= partitions:
            return
    raise RuntimeError(f"no high watermark for {sorted(consumer.assignment() - moved)}")


def caused_by(document: dict[str, Any]) -> str:
    return str(document["data"]["caused_by"]["id"])


def own_id(document: dict[str, Any]) -> str:
    return str(document["id"])


async def measure_latency(
    stack: Stack,
    rate: int,
    seconds: float,
    topic: str = BALANCE_CHANGED_TOPIC,
    cause_of: Callable[[dict[str, Any]], str] = caused_by,
) -> dict[str, Any]:
    """Pace the stream at `rate` events/s; time input -> matching output on `topic`.

    For the service the output is the input's balance-changed; for the ceiling, the input
    passed through (`cause_of=own_id`). Both are timed over the same events: those that change
    a balance.
    """
    stream = latency_stream(max(100, int(rate * seconds / 11.5)))
    sent: dict[str, float] = {}
    expected = {event_id for *_, event_id, expects in stream if expects}
    seen: dict[str, float] = {}
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    stop = asyncio.Event()

    async def read() -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=20, max_records=5000)
            now = time.time()
            for records in batch.values():
                for record in records:
                    value = record.value
                    if b'"lat-' not in value:
                        continue
                    cause = cause_of(json.loads(value))
                    if cause in sent and cause not in seen:
                        seen[cause] = now

    # skip what the throughput run left on the topic: reading it all from a memory-only broker
    # takes minutes, so each partition is moved to the high watermark of its first fetch
    await _skip_to_end(consumer)
    reader = asyncio.create_task(read())
    await _warm_up(stack, sent, seen)
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=0, **PRODUCER_KWARGS)
    await producer.start()
    started = time.perf_counter()
    futures = []
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    try:
        for offset in range(0, len(stream), per_tick):
            due = started + (offset / rate)
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            for topic, key, value, event_id, _ in stream[offset : offset + per_tick]:
                now_ms = time.time()
                sent[event_id] = now_ms
                futures.append(
                    await producer.send(topic, value, key=key, timestamp_ms=int(now_ms * 1000))
                )
        await asyncio.gather(*futures)
        send_seconds = time.perf_counter() - started
        deadline = time.perf_counter() + 30
        while len(seen) < len(expected) and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await reader
        await producer.stop()
        await consumer.stop()
    latencies = sorted((seen[i] - sent[i]) * 1000 for i in seen if i in expected)
    return {
        "rate_target": rate,
        "rate_achieved": len(stream) / send_seconds,
        "events_sent": len(stream),
        "balance_changed_expected": len(expected),
        "balance_changed_matched": len(latencies),
        "p50_ms": _percentile(latencies, 50),
        "p90_ms": _percentile(latencies, 90),
        "p99_ms": _percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else None,
    }


def _percentile(values: Sequence[float], pct: float) -> float | None:
    if not values:
        return None
    index = min(len(values) - 1, max(0, round(pct / 100 * len(values) + 0.5) - 1))
    return values[index]
