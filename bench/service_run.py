"""Running the service (and the references) over the backlog, watched through the group's
committed offsets: events/s from the first commit to the last, and the CPU each process used."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from processes import Child, CpuMeter, Stack
from redis.asyncio import Redis

from learning_account_dev.devstack import free_port


def service_child(
    stack: Stack, group: str, name: str, batch_max_records: int | None, *, tree: Path | None = None
) -> Child:
    """The service of this checkout, or of the checkout at `tree` (its `service/` first on the
    path; one that has no `python -m learning_account` is started through its cli module), with
    `batch_max_records` or, if None, that service's own default."""
    env = {
        **os.environ,
        "LA_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        "LA_REDIS_URL": stack.redis_url,
        "LA_CONSUMER_GROUP": group,
        "LA_HTTP_HOST": "127.0.0.1",
        "LA_HTTP_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    if batch_max_records is not None:
        env["LA_BATCH_MAX_RECORDS"] = str(batch_max_records)
    else:
        env.pop("LA_BATCH_MAX_RECORDS", None)
    module = "learning_account"
    if tree is not None:
        env["PYTHONPATH"] = str(tree / "service")
        if not (tree / "service" / "learning_account" / "__main__.py").exists():
            module = "learning_account.cli"
    argv = [sys.executable, "-m", module, "serve"]
    return Child(name, argv, env, stack.work)


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
    # CPU µs per event over the same interval: the consumer process(es), Tansu, Redis
    cpu_us_per_event: dict[str, float | None] = field(default_factory=dict)


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
    poll_s: float = 0.05,
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
    meter = CpuMeter(
        {
            "consumer": [child.pid for child in children],
            "tansu": [stack.tansu_pid],
            "redis": [stack.redis_pid],
        }
    )
    first: tuple[float, int, dict[str, float]] | None = None
    last: tuple[float, int, dict[str, float]] | None = None
    try:
        while True:
            now = time.perf_counter()
            try:
                done = await committed_total(reader, stack)
            except Exception as error:  # the group may not exist yet
                done = 0
                if now - launched > limit_s:
                    raise RuntimeError(f"{name}: cannot read offsets: {error!r}") from error
            cpu = meter.read()
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
            await asyncio.sleep(poll_s)
    finally:
        await reader.stop()
    if first is not None and last is not None:
        result.committed = last[1]
        result.events = last[1] - first[1]
        result.seconds = last[0] - first[0]
        result.cpu_seconds = last[2]["consumer"] - first[2]["consumer"]
        result.cpu_us_per_event = CpuMeter.us_per_event(first[2], last[2], result.events)
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
