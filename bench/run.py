"""End-to-end benchmark of the learning-account service, with its references, in one command.

    .venv/bin/python bench/run.py                 # 20,000 students (a few minutes)
    .venv/bin/python bench/run.py --quick         # ~2,000 students, a CI smoke run (< 90 s)
    .venv/bin/python bench/run.py --students 5000 --profile

One run starts its own Tansu broker and two redis-servers on free ports, then:

1. produces a synthetic load (yearly packages: a registration with ~10 units, a result per unit,
   some deregistrations and degrees, ~2% duplicates re-sent with the same bytes, keyed by student
   id) into the input topics, completely, BEFORE any consumer under test starts;
2. runs the real service (`python -m learning_account.cli serve`, fresh group, flushed Redis)
   over that backlog: sustained events/s from its first commit until its committed offsets reach
   the end of every input partition (the ends come from the producer's RecordMetadata, since
   Tansu's ListOffsets is not reliable), CPU seconds per 10,000 events from /proc/<pid>/stat;
   then, with the same service caught up, the latency from input to balance-changed with a
   producer paced at --rate events/s (matched on data.caused_by.id);
3. runs the naive per-message reference (one awaited Redis call + one awaited publish per event)
   and the ceiling (a bare aiokafka pass-through) over the same backlog, each in its own group;
4. runs two service instances in one group over the same backlog (scaling);
5. in-process (no Kafka): the Redis memory per student after four years of history, and the
   per-event cost of the Processor at history lengths 1, 100, 250 and 500;
6. prints a markdown table and writes everything to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from learning_account import events as ev
from learning_account.devstack import (
    PRODUCER_KWARGS,
    LocalProcess,
    ensure_topics,
    free_port,
    start_redis,
    start_tansu,
    wait_for_kafka,
)
from learning_account.pipeline import InputRecord, Processor
from learning_account.redis_connect import redis_client
from learning_account.runtime import tune_gc
from learning_account.settings import Settings
from learning_account.store import AccountStore, account_key
from learning_account.wire import BALANCE_CHANGED_TOPIC, INPUT_TOPICS, OUTPUT_TOPICS

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_DIR = HERE / "results"
PARTITIONS = 3
NAIVE_OUT = "bench.naive-out.v1"
CEILING_OUT = "bench.ceiling-out.v1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

TARGETS = {
    "service_vs_naive_min": 20.0,
    "service_vs_ceiling_min": 0.40,
    "p99_ms_max": 100.0,
    "redis_bytes_per_student_max": 2048,
    "history_cost_ratio_max": 1.0,
}


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- load


@dataclass
class Load:
    records: list[tuple[str, bytes, bytes]]
    students: int
    duplicates: int
    by_type: dict[str, int]


def _units(rng: random.Random, prefix: str) -> dict[str, float]:
    count = rng.choice((8, 9, 10, 10, 10, 11, 12))
    return {f"{prefix}{i:02d}": rng.choice((3.0, 4.0, 5.0, 6.0, 6.0, 6.0)) for i in range(count)}


def student_year(
    rng: random.Random,
    sid: str,
    year: int,
    failed: dict[str, list[str]],
    *,
    pass_rate: float,
    deregistered_units: tuple[int, ...],
) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, Any]]]:
    """One student's academic year: a registration (new units plus up to 4 failed ones
    retaken), in 5% of cases a deregistration of some units on 3 October, and a result for every
    unit kept. `failed` is updated with this year's failed units."""
    units = _units(rng, f"Y{year % 100}-")
    for code in failed.get(sid, [])[:4]:
        units[code] = 6.0
    codes = list(units)
    deregistration = None
    if rng.random() < 0.05:
        count = deregistered_units[0]
        if len(deregistered_units) > 1:
            count = rng.choice(deregistered_units)
        gone = rng.sample(codes, count)
        deregistration = ev.deregistration(sid, year, gone, date(year, 10, 3))
        codes = [c for c in codes if c not in gone]
    failed[sid] = []
    results = []
    for code in codes:
        outcome = "passed" if rng.random() < pass_rate else "failed"
        if outcome == "failed":
            failed[sid].append(code)
        results.append(ev.exam_result(sid, year, code, outcome))
    return ev.registration(sid, year, units), deregistration, results


def generate_load(students: int, seed: int = 7, duplicate_rate: float = 0.02) -> Load:
    """A chronological backlog: all registrations of a year, deregistrations, then results.

    Every student has academic year 2023-2024, ~30% also 2024-2025 (retaking failed units plus
    new ones), ~5% deregister 1-2 units, ~3% get a degree; ~2% of records are re-sent later with
    the same bytes (duplicates), a few hundred to a few thousand records further on.
    """
    rng = random.Random(seed)
    ids = [f"r{n:07d}" for n in range(students)]
    second_year = {sid for sid in ids if rng.random() < 0.30}
    phases: list[list[dict[str, Any]]] = []
    failed: dict[str, list[str]] = {}
    for year in (2023, 2024):
        active = ids if year == 2023 else [s for s in ids if s in second_year]
        regs, deregs, results = [], [], []
        for sid in active:
            registration, deregistration, year_results = student_year(
                rng, sid, year, failed, pass_rate=0.82, deregistered_units=(1, 2)
            )
            regs.append(registration)
            deregs.extend([deregistration] if deregistration else [])
            results.extend(year_results)
            if rng.random() < 0.03 and (year == 2024 or sid not in second_year):
                results.append(ev.degree(sid, year, rng.choice(("bachelor", "master"))))
        for phase in (regs, deregs, results):
            rng.shuffle(phase)
            phases.append(phase)
    records: list[tuple[str, bytes, bytes]] = []
    by_type: dict[str, int] = {}
    later: dict[int, list[tuple[str, bytes, bytes]]] = {}
    duplicates = 0
    position = 0
    for phase in phases:
        for event in phase:
            record = (ev.topic_of(event), event["data"]["student_id"].encode(), ev.to_bytes(event))
            kind = event["type"].rsplit(".", 2)[-2]
            by_type[kind] = by_type.get(kind, 0) + 1
            records.append(record)
            if rng.random() < duplicate_rate:
                later.setdefault(position + rng.randint(200, 3000), []).append(record)
            position += 1
            for dup in later.pop(position, ()):
                records.append(dup)
                duplicates += 1
    for dups in later.values():
        records.extend(dups)
        duplicates += len(dups)
    return Load(records, students, duplicates, by_type)


async def produce(bootstrap: str, records: Sequence[tuple[str, bytes, bytes]]) -> dict[str, Any]:
    """Produce everything; the partition ends come from the RecordMetadata offsets."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=10, max_batch_size=256 * 1024, **PRODUCER_KWARGS
    )
    await producer.start()
    ends: dict[tuple[str, int], int] = {}
    started = time.perf_counter()
    try:
        for chunk_start in range(0, len(records), 5000):
            futures = [
                await producer.send(topic, value, key=key)
                for topic, key, value in records[chunk_start : chunk_start + 5000]
            ]
            for meta in await asyncio.gather(*futures):
                tp = (meta.topic, meta.partition)
                ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
    finally:
        await producer.stop()
    seconds = time.perf_counter() - started
    return {"ends": ends, "seconds": seconds, "events": len(records)}


# --------------------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Child:
    """A subprocess with its output in a log file; SIGTERM then SIGKILL on stop."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Stack:
    bootstrap: str
    redis_url: str
    work: Path
    ends: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.ends.values())


def service_child(stack: Stack, group: str, name: str, batch_max_records: int) -> Child:
    env = {
        **os.environ,
        "LA_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        "LA_REDIS_URL": stack.redis_url,
        "LA_CONSUMER_GROUP": group,
        "LA_HTTP_HOST": "127.0.0.1",
        "LA_HTTP_PORT": str(free_port()),
        "LA_BATCH_MAX_RECORDS": str(batch_max_records),
        "PYTHONUNBUFFERED": "1",
    }
    argv = [sys.executable, "-m", "learning_account.cli", "serve"]
    return Child(name, argv, env, stack.work)


def reference_child(stack: Stack, kind: str, group: str, out: str, max_records: int) -> Child:
    argv = [
        sys.executable,
        str(HERE / "references.py"),
        kind,
        "--bootstrap",
        stack.bootstrap,
        "--redis",
        stack.redis_url,
        "--group",
        group,
        "--out",
        out,
        "--max-records",
        str(max_records),
    ]
    return Child(f"{kind}-{group}", argv, {**os.environ, "PYTHONUNBUFFERED": "1"}, stack.work)


@dataclass
class RunResult:
    name: str
    events: int = 0
    seconds: float = 0.0
    events_per_s: float = 0.0
    cpu_seconds: float = 0.0
    cpu_s_per_10k_events: float = 0.0
    committed: int = 0
    backlog: int = 0
    completed: bool = False
    startup_s: float = 0.0
    instances: int = 1
    note: str = ""


async def committed_total(reader: AIOKafkaConsumer, stack: Stack) -> int:
    """The group's committed offsets summed over the input partitions (capped at the ends).

    A consumer of the group that never subscribes only sends OffsetFetch (the admin client's
    OffsetFetch response does not decode against Tansu).
    """
    partitions = [TopicPartition(topic, partition) for topic, partition in stack.ends]
    offsets = await asyncio.gather(*(reader.committed(tp) for tp in partitions))
    return sum(
        min(offset, stack.ends[(tp.topic, tp.partition)])
        for tp, offset in zip(partitions, offsets, strict=True)
        if offset is not None and offset > 0
    )


async def watch(
    stack: Stack,
    group: str,
    children: Sequence[Child],
    name: str,
    *,
    limit_s: float,
    window: float | None = None,
) -> RunResult:
    """Poll the group's committed offsets until they reach the ends (or `window` s passed).

    The clock starts at the first commit seen (so group joining is not counted); the events
    counted are those committed after it, the CPU is the children's CPU over the same interval.
    """
    reader = AIOKafkaConsumer(
        bootstrap_servers=stack.bootstrap, group_id=group, enable_auto_commit=False
    )
    await reader.start()
    launched = time.perf_counter()
    result = RunResult(name=name, backlog=stack.total, instances=len(children))
    first: tuple[float, int, float] | None = None
    last: tuple[float, int, float] | None = None
    try:
        while True:
            now = time.perf_counter()
            try:
                done = await committed_total(reader, stack)
            except Exception as error:  # the group may not exist yet
                done = 0
                if now - launched > limit_s:
                    raise RuntimeError(f"{name}: cannot read offsets: {error!r}") from error
            cpu = sum(child.cpu() for child in children)
            if done > 0:
                if first is None:
                    first = (now, done, cpu)
                    result.startup_s = now - launched
                last = (now, done, cpu)
            if done >= stack.total:
                result.completed = True
                break
            if first is not None and window is not None and now - first[0] >= window:
                break
            if now - launched > limit_s:
                result.note = f"timed out after {limit_s:.0f}s"
                break
            for child in children:
                if not child.alive():
                    raise RuntimeError(f"{child.name} exited early:\n{child.tail()}")
            await asyncio.sleep(0.05)
    finally:
        await reader.stop()
    if first is not None and last is not None:
        result.committed = last[1]
        result.events = last[1] - first[1]
        result.seconds = last[0] - first[0]
        result.cpu_seconds = last[2] - first[2]
        if result.seconds > 0:
            result.events_per_s = result.events / result.seconds
        if result.events > 0:
            result.cpu_s_per_10k_events = result.cpu_seconds / result.events * 10_000
    return result


async def redis_used_memory(url: str) -> int:
    redis = Redis.from_url(url)
    try:
        info = await redis.info("memory")
        return int(info["used_memory"])
    finally:
        await redis.aclose()


async def count_held(url: str) -> int:
    """Accounts whose state holds exam results still waiting for their registration."""
    redis = Redis.from_url(url)
    held = 0
    try:
        keys = [key async for key in redis.scan_iter(match="la:*:account", count=1000)]
        for start in range(0, len(keys), 1000):
            async with redis.pipeline(transaction=False) as pipe:
                for key in keys[start : start + 1000]:
                    pipe.hget(key, "s")
                states = await pipe.execute()
            held += sum(1 for state in states if state and b'"h":' in state)
    finally:
        await redis.aclose()
    return held


async def flush(url: str) -> None:
    redis = Redis.from_url(url)
    try:
        await redis.flushall()
    finally:
        await redis.aclose()


# --------------------------------------------------------------------------- latency


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
            units = _units(rng, "L")
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


def _caused_by(document: dict[str, Any]) -> str:
    return str(document["data"]["caused_by"]["id"])


def _own_id(document: dict[str, Any]) -> str:
    return str(document["id"])


async def measure_latency(
    stack: Stack,
    rate: int,
    seconds: float,
    topic: str = BALANCE_CHANGED_TOPIC,
    cause_of: Callable[[dict[str, Any]], str] = _caused_by,
) -> dict[str, Any]:
    """Pace the stream at `rate` events/s; time input -> matching output on `topic`.

    For the service the output is the input's balance-changed; for the ceiling, the input
    passed through (`cause_of=_own_id`). Both are timed over the same events: those that change
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


# --------------------------------------------------------------------------- in-process


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
    processor = Processor(AccountStore(redis), settings.policy)
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


def history_track(sid: str, length: int) -> list[dict[str, Any]]:
    """A student's first `length` events: yearly a registration of 10 units, then 10 passes."""
    events: list[dict[str, Any]] = []
    year = 1970
    while len(events) < length:
        units = {f"H{year}-{i:02d}": 6.0 for i in range(10)}
        events.append(ev.registration(sid, year, units))
        events.extend(ev.exam_result(sid, year, code) for code in units)
        year += 1
    return events[:length]


async def measure_history(
    redis_url: str,
    students: int,
    checkpoints: Sequence[int] = (1, 100, 250, 500),
    rounds: int = 3,
) -> dict[str, Any]:
    """Per-event Processor time (no Kafka) at a student's event number 1, 100, 250, 500.

    Every batch holds one event of each of `students` students, all at the same position in
    their history, so its time / students is the cost of that position. A position's cost is
    averaged over the 11-event yearly cycle (1 registration + 10 results) it falls in, so every
    checkpoint weighs the same mix of event types. The whole history is played `rounds` times
    (new students each time) and each position keeps its median: this machine is shared, and
    one slow batch should not decide a checkpoint.
    """
    redis = redis_client(redis_url, cluster=False)
    await redis.flushall()
    processor = Processor(AccountStore(redis), Settings().policy)
    feeder = Feeder()
    last = max(checkpoints)
    cycle = 11
    length = ((last - 1) // cycle + 1) * cycle
    timings: list[list[float]] = [[] for _ in range(length)]
    state_bytes = 0
    for round_ in range(rounds):
        tracks = [history_track(f"h{round_}-{n:05d}", length) for n in range(students)]
        for position in range(length):
            records = feeder.records(track[position] for track in tracks)
            started = time.perf_counter()
            await processor.process(records)
            timings[position].append((time.perf_counter() - started) / students * 1e6)
        key = account_key(tracks[0][0]["subject"])
        state_bytes = len(await redis.hget(key, "s") or b"")
    await redis.aclose()
    per_position = [statistics.median(values) for values in timings]
    result: dict[str, Any] = {
        "students_per_batch": students,
        "rounds": rounds,
        "state_bytes_at_end": state_bytes,
    }
    costs: dict[str, float] = {}
    for k in checkpoints:
        start = ((k - 1) // cycle) * cycle
        window = per_position[start : start + cycle]
        costs[str(k)] = statistics.mean(window)
    result["us_per_event_at"] = costs
    result["ratio_500_vs_1"] = costs[str(last)] / costs[str(min(checkpoints))]
    return result


# --------------------------------------------------------------------------- profile


def attach_py_spy(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        say("py-spy not found: pip install py-spy into the venv to profile")
        return None
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--duration",
            str(int(seconds)),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarize_collapsed(path: Path, top: int = 25) -> list[tuple[str, float]]:
    """Inclusive share of samples per function from a py-spy collapsed-stack file."""
    totals: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        samples += count
        for frame in set(stack.split(";")):
            name = frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0].rsplit("/")[-1]
            totals[name] = totals.get(name, 0) + count
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [(name, count / samples) for name, count in ranked] if samples else []


# --------------------------------------------------------------------------- report


def render(results: dict[str, Any]) -> str:
    t = results["throughput"]
    svc, naive, ceiling = t["service"], t["naive"], t["ceiling"]
    two = t.get("service_2_instances") or {}
    lat = results["latency"]
    base = results.get("latency_ceiling") or {"rate_target": lat["rate_target"]}
    mem = results["memory"]
    hist = results["history"]
    ratios = results["ratios"]
    verdict = results["targets"]

    def mark(key: str) -> str:
        return "met" if verdict[key]["met"] else "MISSED"

    def fmt(value: Any, digits: int = 0) -> str:
        if value is None:
            return "n/a"
        return f"{value:,.{digits}f}"

    lines = [
        f"### learning-account benchmark ({results['config']['students']:,} students, "
        f"{results['load']['events']:,} input events, {results['machine']['cpus']} CPUs)",
        "",
        "| consumer | events/s | events measured | CPU s / 10k events | complete |",
        "|---|---:|---:|---:|---|",
    ]
    for row in (svc, two, naive, ceiling):
        if not row:
            continue
        label = row["name"]
        lines.append(
            f"| {label} | {fmt(row['events_per_s'])} | {row['events']:,} | "
            f"{fmt(row['cpu_s_per_10k_events'], 2)} | "
            f"{'yes' if row['completed'] else 'no (time window)'} |"
        )
    lines += [
        "",
        "| figure | value | target | |",
        "|---|---:|---:|---|",
        f"| service / naive | {fmt(ratios['service_vs_naive'], 1)}x | >= 20x "
        f"| {mark('service_vs_naive')} |",
        f"| service / ceiling | {fmt(ratios['service_vs_ceiling'] * 100, 0)}% | >= 40% "
        f"| {mark('service_vs_ceiling')} |",
        f"| 2 instances / 1 instance | {fmt(ratios.get('scaling_2_vs_1'), 2)}x | (report) | |",
        f"| latency p50 @ {lat['rate_target']:,}/s | {fmt(lat['p50_ms'], 1)} ms | | |",
        f"| latency p99 @ {lat['rate_target']:,}/s | {fmt(lat['p99_ms'], 1)} ms | <= 100 ms "
        f"| {mark('p99_latency')} |",
        f"| ceiling latency p50 / p99 @ {base['rate_target']:,}/s (the broker's share) | "
        f"{fmt(base.get('p50_ms'), 1)} / {fmt(base.get('p99_ms'), 1)} ms | | |",
        f"| Redis per student, 4 years (outbox expired, MEMORY USAGE of its keys,"
        f" Redis as in deploy/) | "
        f"{fmt(mem['bytes_per_student'])} B "
        f"| <= 2,048 B | {mark('redis_per_student')} |",
        f"| Redis per student, 4 years (outbox expired, used_memory delta) | "
        f"{fmt(mem['bytes_per_student_used_memory'])} B | | |",
        f"| Redis per student, 4 years (outbox live) | "
        f"{fmt(mem['bytes_per_student_with_outbox'])} B | | |",
        f"| CPU per 10k events (service) | {fmt(svc['cpu_s_per_10k_events'], 2)} s | | |",
    ]
    costs = hist["us_per_event_at"]
    lines.append(
        "| Processor us/event at event #1/#100/#250/#500 | "
        + " / ".join(fmt(costs[k], 0) for k in ("1", "100", "250", "500"))
        + f" | #500 <= #1 | {mark('history_cost')} |"
    )
    lines.append(f"| cost #500 / cost #1 | {fmt(hist['ratio_500_vs_1'], 2)}x | <= 1.0x | |")
    return "\n".join(lines)


def judge(results: dict[str, Any]) -> dict[str, Any]:
    ratios = results["ratios"]
    lat = results["latency"]
    mem = results["memory"]
    hist = results["history"]
    p99 = lat["p99_ms"]
    return {
        "service_vs_naive": {
            "value": ratios["service_vs_naive"],
            "target": TARGETS["service_vs_naive_min"],
            "met": ratios["service_vs_naive"] >= TARGETS["service_vs_naive_min"],
        },
        "service_vs_ceiling": {
            "value": ratios["service_vs_ceiling"],
            "target": TARGETS["service_vs_ceiling_min"],
            "met": ratios["service_vs_ceiling"] >= TARGETS["service_vs_ceiling_min"],
        },
        "p99_latency": {
            "value": p99,
            "target": TARGETS["p99_ms_max"],
            "met": p99 is not None
            and p99 <= TARGETS["p99_ms_max"]
            and lat["balance_changed_matched"] == lat["balance_changed_expected"],
        },
        "redis_per_student": {
            "value": mem["bytes_per_student"],
            "target": TARGETS["redis_bytes_per_student_max"],
            "met": mem["bytes_per_student"] <= TARGETS["redis_bytes_per_student_max"],
        },
        "history_cost": {
            "value": hist["ratio_500_vs_1"],
            "target": TARGETS["history_cost_ratio_max"],
            "met": hist["ratio_500_vs_1"] <= TARGETS["history_cost_ratio_max"],
        },
    }


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    students = args.students or (2000 if quick else 20_000)
    work = Path(tempfile.mkdtemp(prefix="la-bench-"))
    say(f"work dir {work}")
    kafka_port, redis_port, redis2_port = free_port(), free_port(), free_port()
    started_procs: list[LocalProcess] = []
    children: list[Child] = []
    results: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": {
            "students": students,
            "quick": quick,
            "partitions": PARTITIONS,
            "batch_max_records": args.batch_max_records,
            "latency_rate": args.rate,
        },
    }
    try:
        started_procs.append(start_tansu(kafka_port, work / "logs"))
        # the Redis settings of deploy/docker-compose.yml: an account hash stays a listpack
        tuned = ("--hash-max-listpack-value", "1024")
        started_procs.append(
            start_redis(redis_port, work / "redis", log_dir=work / "logs", extra_args=tuned)
        )
        started_procs.append(
            start_redis(redis2_port, work / "redis2", log_dir=work / "logs", extra_args=tuned)
        )
        stack = Stack(f"127.0.0.1:{kafka_port}", f"redis://127.0.0.1:{redis_port}/0", work)
        inproc_redis = f"redis://127.0.0.1:{redis2_port}/0"
        await wait_for_kafka(stack.bootstrap)
        topics = {t: PARTITIONS for t in (*INPUT_TOPICS, *OUTPUT_TOPICS, NAIVE_OUT, CEILING_OUT)}
        await ensure_topics(stack.bootstrap, topics)

        # ---- in-process figures (no Kafka): memory and cost against history length
        mem_students = args.memory_students or (300 if quick else 2000)
        say(f"memory: four years of history for {mem_students} students (in-process)")
        results["memory"] = await measure_memory(inproc_redis, mem_students)
        hist_students = 10 if quick else 50
        say(f"history: per-event cost at event #1..#500 ({hist_students} students per batch)")
        results["history"] = await measure_history(inproc_redis, hist_students)

        # ---- latency at a fixed rate, while the topics are still nearly empty: Tansu keeps
        # everything in memory and its fetches slow down as topics grow, which would put the
        # broker's size in the figures. The service first, then the ceiling on the same stream.
        latency_seconds = args.latency_seconds or (4 if quick else 15)
        await flush(stack.redis_url)
        for kind in ("service", "ceiling"):
            say(f"latency: {kind}, {args.rate:,} events/s for {latency_seconds}s")
            if kind == "service":
                child = service_child(
                    stack, "bench-latency-service", "latency-service", args.batch_max_records
                )
                topic, cause_of, key = BALANCE_CHANGED_TOPIC, _caused_by, "latency"
            else:
                child = reference_child(
                    stack, "ceiling", "bench-latency-ceiling", CEILING_OUT, args.batch_max_records
                )
                topic, cause_of, key = CEILING_OUT, _own_id, "latency_ceiling"
            children.append(child)
            results[key] = await measure_latency(stack, args.rate, latency_seconds, topic, cause_of)
            child.stop()
            children.remove(child)
            say(f"latency: {kind} p50 {results[key]['p50_ms']} ms, p99 {results[key]['p99_ms']} ms")

        # ---- the backlog
        say(f"generating the load for {students:,} students")
        load = generate_load(students)
        say(f"producing {len(load.records):,} records ({load.duplicates:,} duplicates)")
        produced = await produce(stack.bootstrap, load.records)
        stack.ends = produced["ends"]
        results["load"] = {
            "events": stack.total,
            "students": students,
            "duplicates": load.duplicates,
            "by_type": load.by_type,
            "produce_events_per_s": stack.total / produced["seconds"],
            "partition_ends": {f"{t}/{p}": end for (t, p), end in sorted(stack.ends.items())},
        }
        timeout = args.timeout or (120 if quick else 900)
        throughput: dict[str, Any] = {}

        # ---- the service, one instance, over the backlog; then latency on the same instance
        await flush(stack.redis_url)
        memory_before = await redis_used_memory(stack.redis_url)
        say("service x1: consuming the backlog")
        service = service_child(stack, "bench-service-1", "service-1", args.batch_max_records)
        children.append(service)
        spy = None
        if args.profile:
            spy = attach_py_spy(service.pid, work / "service.pyspy.txt", args.profile_seconds)
        svc = await watch(stack, "bench-service-1", [service], "service x1", limit_s=timeout)
        throughput["service"] = asdict(svc)
        held = await count_held(stack.redis_url)
        throughput["service"]["redis_bytes_per_student_after_backlog"] = (
            await redis_used_memory(stack.redis_url) - memory_before
        ) / students
        throughput["service"]["students_with_held_results"] = held
        say(f"service x1: {svc.events_per_s:,.0f} events/s over {svc.seconds:.1f}s")
        if spy is not None:
            spy.wait()
            profile_path = work / "service.pyspy.txt"
            if profile_path.exists():
                RESULTS_DIR.mkdir(parents=True, exist_ok=True)
                shutil.copy(profile_path, RESULTS_DIR / "service-pyspy-collapsed.txt")
                results["profile_top"] = summarize_collapsed(profile_path)
        service.stop()
        children.remove(service)

        # ---- naive reference (a time window: it is far too slow to drain the backlog)
        await flush(stack.redis_url)
        naive_window = args.naive_seconds or (5 if quick else 20)
        say(f"naive: per-message handler for {naive_window}s")
        naive = reference_child(stack, "naive", "bench-naive", NAIVE_OUT, 50)
        children.append(naive)
        naive_result = await watch(
            stack, "bench-naive", [naive], "naive per-message", limit_s=timeout, window=naive_window
        )
        naive.stop()
        children.remove(naive)
        throughput["naive"] = asdict(naive_result)
        say(f"naive: {naive_result.events_per_s:,.0f} events/s")

        # ---- ceiling reference
        say("ceiling: bare pass-through")
        ceiling = reference_child(
            stack, "ceiling", "bench-ceiling", CEILING_OUT, args.batch_max_records
        )
        children.append(ceiling)
        ceiling_result = await watch(
            stack, "bench-ceiling", [ceiling], "ceiling pass-through", limit_s=timeout
        )
        ceiling.stop()
        children.remove(ceiling)
        throughput["ceiling"] = asdict(ceiling_result)
        say(f"ceiling: {ceiling_result.events_per_s:,.0f} events/s")

        # ---- scaling: two service instances in one group
        if not args.skip_scaling:
            await flush(stack.redis_url)
            say("service x2: two instances in one group")
            pair = [
                service_child(stack, "bench-service-2", f"service-2{n}", args.batch_max_records)
                for n in "ab"
            ]
            children.extend(pair)
            two = await watch(stack, "bench-service-2", pair, "service x2", limit_s=timeout)
            for child in pair:
                child.stop()
                children.remove(child)
            throughput["service_2_instances"] = asdict(two)
            say(f"service x2: {two.events_per_s:,.0f} events/s")
        results["throughput"] = throughput
        results["ratios"] = {
            "service_vs_naive": svc.events_per_s / max(naive_result.events_per_s, 1e-9),
            "service_vs_ceiling": svc.events_per_s / max(ceiling_result.events_per_s, 1e-9),
        }
        if "service_2_instances" in throughput:
            results["ratios"]["scaling_2_vs_1"] = throughput["service_2_instances"][
                "events_per_s"
            ] / max(svc.events_per_s, 1e-9)
        results["targets"] = judge(results)
        results["all_events_processed"] = bool(svc.completed and svc.committed == stack.total)
        return results
    finally:
        for child in children:
            child.stop(timeout=10)
        for proc in reversed(started_procs):
            proc.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"kept {work}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="learning-account end-to-end benchmark")
    parser.add_argument("--students", type=int, default=None, help="default 20,000 (quick 2,000)")
    parser.add_argument("--quick", action="store_true", help="small CI smoke run (< 90 s)")
    parser.add_argument("--rate", type=int, default=2000, help="paced rate for the latency run")
    parser.add_argument("--latency-seconds", type=float, default=None)
    parser.add_argument("--naive-seconds", type=float, default=None)
    parser.add_argument("--memory-students", type=int, default=None)
    parser.add_argument("--batch-max-records", type=int, default=500)
    parser.add_argument(
        "--timeout", type=float, default=None, help="limit per consumer run (900 s; quick 120 s)"
    )
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--profile", action="store_true", help="py-spy the service x1 run")
    parser.add_argument("--profile-seconds", type=float, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json")
    return parser.parse_args(argv)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # runs the cleanup of every started process


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    # the in-process figures run the Processor as the service does, GC tuning included; it
    # also keeps this process (load generator, latency reader) from stealing CPU in collections
    tune_gc(Settings.from_env().gc_threshold)
    started = time.perf_counter()
    results = asyncio.run(run(args))
    results["bench_seconds"] = time.perf_counter() - started
    table = render(results)
    results["table_markdown"] = table
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table)
    say(f"wrote {args.output} in {results['bench_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
