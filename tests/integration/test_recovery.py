"""Recovery past the input topics' retention: a streaming rebuild, and restore from snapshots."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))

from harness import FaultReport, Feed, differs, stored_accounts, verify
from workload import Phase, Workload, generate

from learning_account.adapters.redis_layout import account_key
from learning_account.adapters.redis_store import RedisStore
from learning_account.ops.rebuild import (
    history_consumer,
    input_partitions,
    read_partition,
    rebuild,
)
from learning_account.ops.restore import SNAPSHOT_TOPICS
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account.settings import Settings
from learning_account.wire import DEAD_LETTER_TOPIC, INPUT_TOPICS, OUTPUT_TOPICS
from learning_account_dev.devstack import (
    LocalProcess,
    ensure_topics,
    free_port,
    start_tansu,
    wait_for_kafka,
)
from support.kafka import consume_to_end
from support.redis import RestartableRedis, database_url
from support.service import ServiceProcess

GROUP = "recovery"


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[str]:
    """A broker of its own: rebuild and restore read fixed topic names from the beginning."""
    port = free_port()
    tansu: LocalProcess = start_tansu(port, tmp_path / "tansu")
    bootstrap = f"127.0.0.1:{port}"
    try:
        await wait_for_kafka(bootstrap, timeout=30)
        await ensure_topics(
            bootstrap, {t: 3 for t in (*INPUT_TOPICS, *OUTPUT_TOPICS, *SNAPSHOT_TOPICS)}
        )
        yield bootstrap
    finally:
        tansu.stop()


async def send(bootstrap: str, phases: list[Phase]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for phase in phases:
            pending = [await producer.send(phase.topic, v, key=k) for k, v in phase.records]
            await asyncio.gather(*pending)
    finally:
        await producer.stop()


def settings_for(bootstrap: str, redis_url: str) -> Settings:
    return Settings.from_env({"LA_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "LA_REDIS_URL": redis_url})


async def old_rebuild(settings: Settings) -> None:
    """A rebuild holding the whole history in memory, sorted, then applied: what the
    streaming rebuild's memory is compared with."""
    consumer = history_consumer(settings)
    try:
        history: list[list[InputRecord]] = []
        for tp in await input_partitions(consumer):
            records: list[InputRecord] = []
            async for chunk in read_partition(consumer, tp):
                records.extend(chunk)
            history.append(records)
    finally:
        consumer.close()
    keyed = sorted(
        (r.timestamp_ms or 0, index, r.offset, r)
        for index, records in enumerate(history)
        for r in records
    )
    everything = [item[3] for item in keyed]
    redis = Redis.from_url(settings.redis_url)
    try:
        processor = Processor(RedisStore(redis), settings.policy)
        size = settings.batch_max_records
        for start in range(0, len(everything), size):
            await processor.process(everything[start : start + size])
    finally:
        await redis.aclose()


async def peak_bytes(run: Any) -> int:
    tracemalloc.start()
    try:
        await run
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def mismatches(workloads: list[Workload], redis_url: str) -> int:
    wrong = 0
    for workload in workloads:
        stored = await stored_accounts(redis_url, workload.students)
        for sid, actual in zip(workload.students, stored, strict=True):
            wrong += differs(workload.accounts.get(sid), actual)
    return wrong


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_rebuild_memory_does_not_grow_with_the_history(broker: str, redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    workloads = [generate(300, seed=seed) for seed in (11, 12, 13, 14, 15, 16)]
    await send(broker, [phase for w in workloads[:2] for phase in w.phases])
    small = await peak_bytes(rebuild(settings_for(broker, f"{base}/5")))
    await send(broker, [phase for w in workloads[2:] for phase in w.phases])
    large_settings = settings_for(broker, f"{base}/6")
    large = await peak_bytes(rebuild(large_settings))
    old = await peak_bytes(old_rebuild(settings_for(broker, f"{base}/7")))
    records = sum(len(p.records) for w in workloads for p in w.phases)
    print(f"records {records}: streaming 1x {small}, 3x {large}; in memory 3x {old} bytes")
    assert large < 1.3 * small
    assert old > 1.6 * large  # held in memory it grows by the history; streamed it does not
    assert await mismatches(workloads, f"{base}/6") == 0
    assert await mismatches(workloads, f"{base}/7") == 0
    for db in (5, 6, 7):
        client = Redis.from_url(f"{base}/{db}")
        await client.flushdb()
        await client.aclose()


async def raw_state(redis_url: str) -> dict[bytes, Any]:
    """Every key of a Redis with its value (hashes, strings, the held index)."""
    redis = Redis.from_url(redis_url)
    state: dict[bytes, Any] = {}
    try:
        async for key in redis.scan_iter("la:*"):
            kind = (await redis.type(key)).decode()
            if kind == "hash":
                state[key] = await redis.hgetall(key)
            elif kind == "string":
                state[key] = await redis.get(key)
            elif kind == "zset":
                state[key] = await redis.zrange(key, 0, -1, withscores=True)
    finally:
        await redis.aclose()
    return state


def caused(record: Any) -> str | None:
    document = json.loads(record.value)
    cause = document.get("data", {}).get("caused_by")
    return cause.get("id") if isinstance(cause, dict) else None


async def drain(broker: str, redis_url: str, workload: Workload, log_dir: Path) -> None:
    """A service on `redis_url` until its group committed all of `workload`, then stopped."""
    service = ServiceProcess(
        log_dir,
        KAFKA_BOOTSTRAP_SERVERS=broker,
        REDIS_URL=redis_url,
        CONSUMER_GROUP=GROUP,
        BATCH_MAX_RECORDS="200",
    )
    with service.running():
        async with Feed(broker, GROUP, workload) as feed:
            await feed.run()


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_restore_from_snapshots_gives_the_same_accounts_and_re_published_outputs(
    broker: str, tmp_path: Path
) -> None:
    workload = generate(150, seed=21)
    live = RestartableRedis(tmp_path / "live")
    restored = RestartableRedis(tmp_path / "restored")
    live.start()
    restored.start()
    try:
        await drain(broker, live.url, workload, tmp_path / "logs")
        report = await verify(FaultReport("live"), workload, broker, live.url)
        assert report.state_mismatches == 0 and report.lost == 0, report.notes

        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "learning_account", "restore", "--redis-url", restored.url],
            env={**os.environ, "LA_KAFKA_BOOTSTRAP_SERVERS": broker},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outcome = json.loads(done.stdout.splitlines()[-1])
        assert outcome["accounts"] >= len(workload.students)
        assert outcome["outputs"] > 0 and outcome["expired"] == 0
        assert await raw_state(restored.url) == await raw_state(live.url)
        report = await verify(FaultReport("restored"), workload, broker, restored.url)
        assert report.state_mismatches == 0, report.notes

        before = await consume_to_end(broker, list(OUTPUT_TOPICS), timeout=60)
        ends = {(r.topic, r.partition): r.offset for r in before}
        # later duplicates of earlier inputs, to a service on the restored Redis
        again = [
            Phase(phase.topic, [r for r in phase.records if not r[0].startswith(b"bad-")][:40])
            for phase in workload.phases
        ]
        ids = {json.loads(value)["id"] for phase in again for _, value in phase.records}
        firsts = {r.value for r in before if r.topic != DEAD_LETTER_TOPIC and caused(r) in ids}
        await drain(
            broker, restored.url, dataclasses.replace(workload, phases=again), tmp_path / "logs"
        )
        after = await consume_to_end(broker, list(OUTPUT_TOPICS), timeout=60)
        republished = [r for r in after if r.offset > ends.get((r.topic, r.partition), -1)]
        assert firsts
        assert {r.value for r in republished} == firsts
        assert all(caused(r) in ids for r in republished)
        assert await raw_state(restored.url) == await raw_state(live.url)  # nothing applied
    finally:
        live.kill()
        restored.kill()


def interleaved(messages: list[Any], seed: int) -> list[Any]:
    """The records in an order Kafka may give them to `restore`: each key's in publish order
    (one key, one partition), the keys' records interleaved at random (seed 0: as published)."""
    if not seed:
        return list(messages)
    by_key: dict[bytes, list[Any]] = {}
    for message in messages:
        by_key.setdefault(message.key, []).append(message)
    queues = [list(reversed(queue)) for queue in by_key.values()]
    chosen = random.Random(seed)
    order = []
    while queues:
        queue = chosen.choice(queues)
        order.append(queue.pop())
        if not queue:
            queues.remove(queue)
    return order


@pytest.mark.parametrize("store_snapshots", [True, False], ids=["from-commits", "read-back"])
async def test_snapshots_of_batches_and_sweeps_restore_the_same_redis(
    redis_client: Redis, redis_url: str, store_snapshots: bool
) -> None:
    """What a batch and a held-result sweep report for the snapshot topics, written into an
    empty Redis, gives every key back (hashes, stored outputs, the held index): in publish
    order, and with the records of different keys in other orders (a student's keys lie on
    different partitions). The store keeps what its commits wrote for the snapshots, or reads
    the accounts back after them (a cluster's)."""
    from learning_account.domain.model import Policy
    from learning_account.ops.restore import ACCOUNT_SNAPSHOTS_TOPIC, Restorer
    from learning_account.processing.outputs import OutputMessage
    from learning_account_dev import events as ev

    now = [1_800_000_000.0]
    policy = Policy(result_hold_seconds=60)
    store = RedisStore(redis_client, snapshots=store_snapshots)
    live = Processor(store, policy, clock=lambda: now[0], snapshots=True)
    offsets = iter(range(1000))

    def record(event: dict[str, Any]) -> InputRecord:
        topic = ev.topic_of(event)
        return InputRecord(topic, 0, next(offsets), event["subject"].encode(), ev.to_bytes(event))

    published: list[OutputMessage] = []
    held = ev.exam_result("s2", 2016, "A")
    first = await live.process(
        [
            record(ev.registration("s1", 2016, {"A": 6, "B": 3})),
            record(ev.exam_result("s1", 2016, "A")),
            record(held),
            record(ev.exam_result("s3", 2016, "A")),
        ]
    )
    published.extend(first.snapshots)
    target_url = database_url(redis_url, 8)
    target = Redis.from_url(target_url)
    restorer = Restorer(RedisStore(target), live.held_deadline)

    async def write_all(seed: int = 0) -> None:
        await target.flushdb()
        for n, message in enumerate(interleaved(published, seed)):
            await restorer.apply(message.topic, message.key, message.value, n)
        await restorer.finish()

    try:
        await write_all()  # while s2's and s3's results are held
        assert await raw_state(target_url) == await raw_state(redis_url)
        now[0] += 120
        applied = await live.process([record(ev.registration("s3", 2016, {"A": 6}))])
        published.extend(applied.snapshots)  # s3's held result applied with its registration
        sweep: list[OutputMessage] = []

        async def publish(messages: list[OutputMessage]) -> None:
            sweep.extend(messages)

        assert await live.sweep_held(publish) == 1  # s2's is refused
        assert {m.topic for m in sweep} >= {ACCOUNT_SNAPSHOTS_TOPIC}
        published.extend(m for m in sweep if m.event_type.endswith("snapshot"))
        second = await live.process([record(ev.registration("s1", 2017, {"C": 6}))])
        published.extend(second.snapshots)
        await write_all()
        state = await raw_state(target_url)
        assert state != {} and state == await raw_state(redis_url)
        assert restorer.report.stale == 0 and restorer.report.outputs > 0
        assert restorer.report.accounts == 3
        keys = {m.key for m in published if m.topic == ACCOUNT_SNAPSHOTS_TOPIC}
        assert {b"s1/y:2016", b"s1/y:2017", b"s2/"} <= keys  # a part each, the settle's core
        for seed in range(1, 9):
            await write_all(seed)
            assert await raw_state(target_url) == state, seed
    finally:
        await target.flushdb()
        await target.aclose()


async def test_a_settle_after_a_later_commit_is_restored_whatever_the_order(
    redis_client: Redis, redis_url: str
) -> None:
    """A settle drops pending digests at the version a later commit wrote: its core record
    (key `<student>/`) and that commit's (key `<student>/y:<year>`, the digests still pending)
    have one version and may be read in either order; the settled core is restored."""
    from learning_account.domain.model import Policy
    from learning_account.ops.restore import ACCOUNT_SNAPSHOTS_TOPIC, Restorer, core_snapshot
    from learning_account.processing.store import AccountWrite, AppliedStep
    from learning_account_dev import events as ev

    store = RedisStore(redis_client, snapshots=True)
    live = Processor(store, Policy(), snapshots=True)
    offsets = iter(range(100))

    async def process(event: dict[str, Any]) -> list[Any]:
        record = InputRecord(
            ev.topic_of(event), 0, next(offsets), event["subject"].encode(), ev.to_bytes(event)
        )
        return (await live.process([record])).snapshots

    first = await process(ev.registration("s", 2016, {"A": 6}))
    loaded = (await store.load({"s": []}))["s"]
    pending = AccountWrite(
        "s", loaded.version, loaded.account, (AppliedStep("0d" * 8, b"o1"),), pending=True
    )
    assert await store.commit([pending]) == {"s": True}
    swept = await live.snapshot_messages([pending])
    result = await process(ev.exam_result("s", 2016, "A"))
    version = (await store.load({"s": []}))["s"].version
    await store.settle_held("s", version, ["0d" * 8], None, await store.claim_held("s"))
    settled = core_snapshot("s", await redis_client.hgetall(account_key("s")))
    assert b"p" not in await redis_client.hgetall(account_key("s"))
    accounts = [m for m in (*first, *swept, *result) if m.topic == ACCOUNT_SNAPSHOTS_TOPIC]
    [later] = [m for m in accounts if m.key == b"s/y:2016" and m.event_id.endswith(f"@{version}")]
    assert settled.key == b"s/" and later.event_id.endswith(f"@{version}")
    target_url = database_url(redis_url, 9)
    target = Redis.from_url(target_url)
    restorer = Restorer(RedisStore(target), live.held_deadline)
    try:
        for order in (
            [*accounts, settled],
            [*[m for m in accounts if m is not later], settled, later],
        ):
            await target.flushdb()
            for n, message in enumerate(order):
                await restorer.apply(message.topic, message.key, message.value, n)
            await restorer.finish()
            assert await target.hgetall(account_key("s")) == await redis_client.hgetall(
                account_key("s")
            )
    finally:
        await target.flushdb()
        await target.aclose()


async def test_a_whole_account_record_of_format_1_is_restored(
    redis_client: Redis, redis_url: str
) -> None:
    """Earlier releases published the whole hash in one record keyed by the student id: it is
    restored as all of its parts, and a later record of a part (format 2) wins over it."""
    from learning_account.domain.model import Policy
    from learning_account.ops.restore import ACCOUNT_SNAPSHOTS_TOPIC, Restorer
    from learning_account_dev import events as ev

    live = Processor(RedisStore(redis_client, snapshots=True), Policy(), snapshots=True)
    event = ev.registration("s", 2016, {"A": 6})
    record = InputRecord(ev.topic_of(event), 0, 1, b"s", ev.to_bytes(event))
    assert (await live.process([record])).snapshots
    whole = await redis_client.hgetall(account_key("s"))
    names = sorted(whole)
    line = {"format": 1, "student_id": "s", "fields": [[n.decode(), len(whole[n])] for n in names]}
    value = json.dumps(line).encode() + b"\n" + b"".join(whole[n] for n in names)
    event = ev.registration("s", 2017, {"B": 3})
    record = InputRecord(ev.topic_of(event), 0, 2, b"s", ev.to_bytes(event))
    later = [
        m for m in (await live.process([record])).snapshots if m.topic == ACCOUNT_SNAPSHOTS_TOPIC
    ]
    assert [m.key for m in later] == [b"s/y:2017"]
    target = Redis.from_url(database_url(redis_url, 10))
    restorer = Restorer(RedisStore(target), live.held_deadline)
    try:
        for first in (True, False):  # the old record before or after the later one
            await target.flushdb()
            order = [(b"s", value), *[(m.key, m.value) for m in later]]
            for n, (key, blob) in enumerate(order if first else order[::-1]):
                await restorer.apply(ACCOUNT_SNAPSHOTS_TOPIC, key, blob, n)
            assert (await restorer.finish()).accounts == 1
            assert await target.hgetall(account_key("s")) == await redis_client.hgetall(
                account_key("s")
            )
    finally:
        await target.flushdb()
        await target.aclose()
