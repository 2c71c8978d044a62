"""The machine's limit for this workload on the Redis side: Redis replaying the service's own
load and commit scripts on the bench's accounts, as fast as one pipelined connection sends them.

1. `capture` runs the service's Processor and RedisStore in-process over the backlog, configured
   as the live service has them (snapshots taken), recording
   every command the store sends (on a single Redis: the loads' HMGETs, the commits' WATCH,
   checks and MULTI/EXEC, the GETs of re-delivered events' outputs; any pipeline or script
   call too), as the service packs them, and the scripts it loads.
2. `replay` loads those scripts into a fresh redis-server and writes every recorded command down
   one connection while a reader drains the replies, then reports events/s and Redis's CPU µs
   per event (`INFO cpu` used_cpu_sys + used_cpu_user) and the Redis commands per event by
   kind (`INFO commandstats`, the scripts' own calls included). The replay writes the same
   states in the same order, so its version checks pass as they did; it is checked by comparing
   the keys and a sample of account versions with the captured Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection

from learning_account.adapters.redis_layout import account_key
from learning_account.adapters.redis_store import RedisStore
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account.settings import Settings
from learning_account_dev.devstack import free_port, start_redis

REPLAY_SAMPLE = 200


@dataclass
class Recording:
    """The commands of every pipeline that went through without an error, in order."""

    scripts: list[str] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    commands: int = 0
    script_calls: int = 0
    watching: dict[int, list[bytes]] = field(default_factory=dict)

    def add(self, commands: Sequence[tuple[Any, ...]]) -> None:
        self.add_packed([pack(command) for command in commands])

    def add_exchange(self, connection: int, commands: Sequence[bytes]) -> None:
        """One exchange of the store on a connection. The first exchange of a transaction (its
        WATCH) is held until that connection's next one (its MULTI/EXEC), and the two are kept
        together: the replay sends everything down one connection, where the WATCHes of the
        batch's transactions, sent at once over several connections, would pile up on one
        client and cost Redis what they do not cost it in the service."""
        if commands and _name(commands[0]) == b"WATCH":
            self.watching[connection] = list(commands)
            return
        self.add_packed([*self.watching.pop(connection, []), *commands])

    def add_packed(self, commands: Sequence[bytes]) -> None:
        self.chunks.append(b"".join(commands))
        self.commands += len(commands)
        self.script_calls += sum(1 for command in commands if _name(command) in _SCRIPT_CALLS)


_SCRIPT_CALLS = (b"EVALSHA", b"EVAL")


def _name(packed: bytes) -> bytes:
    """The name of a packed command ("*<n>\r\n$<len>\r\n<name>\r\n...")."""
    return packed.split(b"\r\n", 3)[2].upper()


def pack(command: tuple[Any, ...]) -> bytes:
    """RESP bytes of one command, as the service's hiredis packing writes it."""
    name, *rest = command
    words = name.split() if isinstance(name, str | bytes) else [name]
    packed = tuple(_encoded(arg) for arg in (*words, *rest))
    return bytes(hiredis.pack_command(packed))  # type: ignore[arg-type]  # its stub: a 1-tuple


def _encoded(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, float):
        return repr(value).encode()  # as redis-py's encoder writes a float
    return str(value).encode()


class RecordingPipeline(Pipeline):
    recording: Recording

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        commands = [args for args, _ in self.command_stack]
        replies: list[Any] = await super().execute(raise_on_error)
        # a NOSCRIPT reply is retried by the store after loading its scripts: keep the retry only
        if not any(isinstance(reply, Exception) for reply in replies):
            self.recording.add(commands)
        return replies


class RecordingRedis(Redis):
    recording: Recording

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = RecordingPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.recording = self.recording
        return pipe

    async def script_load(self, script: Any) -> str:
        text = script.decode() if isinstance(script, bytes) else str(script)
        if text not in self.recording.scripts:
            self.recording.scripts.append(text)
        return str(await super().script_load(script))


class RecordingStore(RedisStore):
    """The store, its single-Redis exchanges recorded as sent (error replies and all: a NOSCRIPT
    never reaches an exchange, and an error fails the capture)."""

    recording: Recording

    async def _exchange(self, conn: AbstractConnection, commands: list[bytes]) -> list[Any]:
        replies = await super()._exchange(conn, commands)
        self.recording.add_exchange(id(conn), commands)
        return replies


def input_records(records: Sequence[tuple[str, bytes, bytes]]) -> list[InputRecord]:
    return [
        InputRecord(topic, 0, offset, key, value, 1_700_000_000_000 + offset)
        for offset, (topic, key, value) in enumerate(records)
    ]


async def redis_cpu_seconds(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _fingerprint(redis: Redis, students: Sequence[str]) -> tuple[int, list[Any]]:
    async with redis.pipeline(transaction=False) as pipe:
        for student in students:
            pipe.hget(account_key(student), "v")
        versions = await pipe.execute()
    return int(await redis.dbsize()), versions


async def capture(
    redis_url: str, records: Sequence[tuple[str, bytes, bytes]], batch_size: int
) -> tuple[Recording, dict[str, Any]]:
    """The Processor over `records` in batches of `batch_size`, its Redis traffic recorded."""
    redis = RecordingRedis.from_url(redis_url)
    assert isinstance(redis, RecordingRedis)
    redis.recording = Recording()
    await redis.flushall()
    await redis.script_flush()
    # as the live service runs them (bootstrap.build_service): with snapshots
    store = RecordingStore(redis, snapshots=True)
    store.recording = redis.recording
    processor = Processor(store, Settings().policy, snapshots=True)
    batch = input_records(records)
    students = sorted({key.decode() for _, key, _ in records})[:REPLAY_SAMPLE]
    cpu_before = await redis_cpu_seconds(redis)
    started = time.perf_counter()
    for start in range(0, len(batch), batch_size):
        await processor.process(batch[start : start + batch_size])
    seconds = time.perf_counter() - started
    cpu = await redis_cpu_seconds(redis) - cpu_before
    keys, versions = await _fingerprint(redis, students)
    await redis.aclose()
    return redis.recording, {
        "events": len(batch),
        "batch_size": batch_size,
        "processor_events_per_s": len(batch) / seconds,
        "redis_cpu_us_per_event_in_process": cpu / len(batch) * 1e6,
        "keys": keys,
        "sample_students": students,
        "sample_versions": versions,
    }


async def _drain(reader: asyncio.StreamReader, expected: int) -> tuple[int, str | None]:
    """Read `expected` replies; the number that were errors and the first error's text."""
    parser = hiredis.Reader()
    seen = errors = 0
    first_error: str | None = None
    while seen < expected:
        data = await reader.read(1 << 20)
        if not data:
            raise RuntimeError(f"Redis closed the connection after {seen} of {expected} replies")
        parser.feed(data)
        while (reply := parser.gets()) is not False:
            seen += 1
            if isinstance(reply, hiredis.ReplyError):
                errors += 1
                first_error = first_error or str(reply)
    return errors, first_error


async def replay(
    recording: Recording, captured: dict[str, Any], work: Path, redis_args: Sequence[str]
) -> dict[str, Any]:
    """Every recorded command against a fresh redis-server, pipelined down one connection."""
    port = free_port()
    server = start_redis(port, work / "redis-replay", log_dir=work / "logs", extra_args=redis_args)
    redis = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        for script in recording.scripts:
            await redis.script_load(script)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.set_write_buffer_limits(high=8 << 20)  # keep Redis's socket full
        cpu_before = await redis_cpu_seconds(redis)
        client_before = time.process_time()
        started = time.perf_counter()
        drained = asyncio.create_task(_drain(reader, recording.commands))
        for chunk in recording.chunks:
            writer.write(chunk)
            await writer.drain()
        errors, first_error = await drained
        seconds = time.perf_counter() - started
        client_cpu = time.process_time() - client_before
        cpu = await redis_cpu_seconds(redis) - cpu_before
        writer.close()
        commands_run = await redis.info("commandstats")
        keys, versions = await _fingerprint(redis, captured["sample_students"])
    finally:
        await redis.aclose()
        server.stop()
    events = captured["events"]
    return {
        "events": events,
        "commands": recording.commands,
        "script_calls": recording.script_calls,
        "bytes_sent": sum(len(chunk) for chunk in recording.chunks),
        "seconds": seconds,
        "events_per_s": events / seconds,
        "redis_cpu_us_per_event": cpu / events * 1e6,
        # the rate if Redis had a core to itself (the machine is shared with the client)
        "events_per_redis_cpu_s": events / cpu if cpu > 0 else None,
        "client_cpu_us_per_event": client_cpu / events * 1e6,
        # every command Redis ran, the scripts' redis.call ones included, by kind
        "redis_calls_per_event": {
            name.removeprefix("cmdstat_"): round(int(stats["calls"]) / events, 3)
            for name, stats in sorted(commands_run.items())
            if name != "cmdstat_script|load"
        },
        "errors": errors,
        "first_error": first_error,
        "same_state_as_captured": keys == captured["keys"]
        and versions == captured["sample_versions"],
    }


async def redis_limit(
    capture_url: str,
    records: Sequence[tuple[str, bytes, bytes]],
    batch_size: int,
    work: Path,
    redis_args: Sequence[str],
) -> dict[str, Any]:
    recording, captured = await capture(capture_url, records, batch_size)
    replayed = await replay(recording, captured, work, redis_args)
    captured = {k: v for k, v in captured.items() if not k.startswith("sample_")}
    return {"capture": captured, "replay": replayed}
