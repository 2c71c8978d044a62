"""In-process figures, without Kafka: Redis memory per student after four years of history, and
the Processor's cost per event at a student's event #1, #100, #250 and #500."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Iterable, Sequence
from typing import Any

from load import student_year
from redis.asyncio import Redis

from learning_account.adapters.redis_connect import redis_client
from learning_account.adapters.redis_layout import account_key
from learning_account.adapters.redis_store import RedisStore
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account.settings import Settings
from learning_account_dev import events as ev


class Feeder:
    """Turns CloudEvent dicts into InputRecords with increasing offsets and timestamps."""

    def __init__(self) -> None:
        self.offset = 0

    def records(self, events: Iterable[dict[str, Any]]) -> list[InputRecord]:
        out = []
        for event in events:
            self.offset += 1
            out.append(
                InputRecord(
                    topic=ev.topic_of(event),
                    partition=0,
                    offset=self.offset,
                    key=event["data"]["student_id"].encode(),
                    value=ev.to_bytes(event),
                    timestamp_ms=1_700_000_000_000 + self.offset,
                )
            )
        return out


async def process_all(processor: Processor, records: Sequence[InputRecord], size: int) -> None:
    for start in range(0, len(records), size):
        await processor.process(records[start : start + size])


async def measure_memory(redis_url: str, students: int) -> dict[str, Any]:
    """Four academic years of history per student through the Processor, then used_memory."""
    redis = Redis.from_url(redis_url)
    await redis.flushall()
    await asyncio.sleep(0.2)
    before = int((await redis.info("memory"))["used_memory"])
    settings = Settings()
    processor = Processor(RedisStore(redis), settings.policy)
    feeder = Feeder()
    rng = random.Random(5)
    ids = [f"m{n:07d}" for n in range(students)]
    failed: dict[str, list[str]] = {}
    events_total = 0
    started = time.perf_counter()
    for year in (2020, 2021, 2022, 2023):
        regs, deregs, results = [], [], []
        for sid in ids:
            registration, deregistration, year_results = student_year(
                rng, sid, year, failed, pass_rate=0.85, deregistered_units=(1,)
            )
            regs.append(registration)
            deregs.extend([deregistration] if deregistration else [])
            results.extend(year_results)
            if year == 2022 and rng.random() < 0.5:
                results.append(ev.degree(sid, year, "bachelor"))
        for phase in (regs, deregs, results):
            records = feeder.records(phase)
            events_total += len(records)
            await process_all(processor, records, 500)
    seconds = time.perf_counter() - started
    await asyncio.sleep(0.2)
    with_outbox = int((await redis.info("memory"))["used_memory"])
    sample = ids[: min(50, len(ids))]
    account_bytes = [await redis.memory_usage(account_key(sid)) or 0 for sid in sample]
    state_len = [len(await redis.hget(account_key(sid), "s") or b"") for sid in sample]
    # what is left once the outbox retention (LA_OUTBOX_RETENTION_SECONDS) has passed
    out_keys = 0
    async for key in redis.scan_iter(match="la:*:out:*", count=1000):
        await redis.unlink(key)
        out_keys += 1
    await asyncio.sleep(0.5)
    steady = int((await redis.info("memory"))["used_memory"])
    # the same, counted key by key (immune to the keyspace table still sized for the outbox)
    async with redis.pipeline(transaction=False) as pipe:
        for sid in ids:
            pipe.memory_usage(account_key(sid), samples=0)
        pipe.memory_usage("la:held", samples=0)
        usages = await pipe.execute()
    await redis.aclose()
    return {
        "students": students,
        "events": events_total,
        "events_per_student": events_total / students,
        "processor_events_per_s": events_total / seconds,
        "bytes_per_student_with_outbox": (with_outbox - before) / students,
        "bytes_per_student": sum(u or 0 for u in usages) / students,
        "bytes_per_student_used_memory": (steady - before) / students,
        "outbox_keys": out_keys,
        "sample_account_hash_bytes": statistics.mean(account_bytes),
        "sample_state_blob_bytes": statistics.mean(state_len),
    }


HISTORY_ROUNDS_PER_YEAR = 3
"""Academic years run from 2008-2009 to one after the records' (2023): 500 events need three
rounds a year."""


def history_track(sid: str, length: int) -> list[dict[str, Any]]:
    """A student's first `length` events from 2008-2009 on: rounds of a registration of 10 units,
    then 10 passes, three rounds a year."""
    events: list[dict[str, Any]] = []
    round_ = 0
    while len(events) < length:
        year = 2008 + round_ // HISTORY_ROUNDS_PER_YEAR
        units = {f"H{year}-{round_}-{i:02d}": 6.0 for i in range(10)}
        events.append(ev.registration(sid, year, units))
        events.extend(ev.exam_result(sid, year, code) for code in units)
        round_ += 1
    return events[:length]


async def measure_history(
    redis_url: str,
    students: int,
    checkpoints: Sequence[int] = (1, 100, 250, 500),
    rounds: int = 5,
    *,
    live: bool = False,
) -> dict[str, Any]:
    """Per-event Processor cost (no Kafka) at a student's event number 1, 100, 250, 500.

    Every batch holds one event of each of `students` students, all at the same position in
    their history, so its cost / students is the cost of that position. A position's cost is
    averaged over the 11-event yearly cycle (1 registration + 10 results) it falls in, so every
    checkpoint weighs the same mix of event types. Each checkpoint has a group of students of
    its own, played (untimed) up to the start of its cycle; then the groups' cycles are played
    side by side, one batch of each group in turn, in an order that rotates, so the batches
    compared run within milliseconds of each other on this shared machine. Both the wall time
    (the Processor with its Redis round trips) and the process's CPU time are kept; each
    position keeps its median over `rounds` rounds (new students each round). With `live`, the
    store and Processor are configured as the live service has them: every commit snapshotted
    (its records carry the account's core and the parts it wrote).
    """
    redis = redis_client(redis_url, cluster=False)
    store = RedisStore(redis, snapshots=live)
    processor = Processor(store, Settings().policy, snapshots=live)
    feeder = Feeder()
    cycle = 11
    starts = {k: ((k - 1) // cycle) * cycle for k in checkpoints}
    wall: dict[int, list[list[float]]] = {k: [[] for _ in range(cycle)] for k in checkpoints}
    cpu: dict[int, list[list[float]]] = {k: [[] for _ in range(cycle)] for k in checkpoints}
    state_bytes = 0
    for round_ in range(rounds):
        await redis.flushall()
        tracks = {
            k: [history_track(f"h{round_}-{k}-{n:05d}", starts[k] + cycle) for n in range(students)]
            for k in checkpoints
        }
        for k in checkpoints:
            for position in range(starts[k]):
                await processor.process(feeder.records(track[position] for track in tracks[k]))
        for offset in range(cycle):
            turn = (offset + round_) % len(checkpoints)
            for k in [*checkpoints[turn:], *checkpoints[:turn]]:
                records = feeder.records(track[starts[k] + offset] for track in tracks[k])
                started, cpu_started = time.perf_counter(), time.process_time()
                await processor.process(records)
                cpu[k][offset].append((time.process_time() - cpu_started) / students * 1e6)
                wall[k][offset].append((time.perf_counter() - started) / students * 1e6)
        key = account_key(tracks[max(checkpoints)][0][0]["subject"])
        state_bytes = len(await redis.hget(key, "s") or b"")
    await redis.aclose()

    def costs(timings: dict[int, list[list[float]]]) -> dict[str, float]:
        return {
            str(k): statistics.mean(statistics.median(values) for values in timings[k])
            for k in checkpoints
        }

    first, last = str(min(checkpoints)), str(max(checkpoints))
    walls, cpus = costs(wall), costs(cpu)
    return {
        "students_per_batch": students,
        "rounds": rounds,
        "state_bytes_at_end": state_bytes,
        "us_per_event_at": walls,
        "ratio_500_vs_1": walls[last] / walls[first],
        "cpu_us_per_event_at": cpus,
        "cpu_ratio_500_vs_1": cpus[last] / cpus[first],
    }
