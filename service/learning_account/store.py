"""Each student's learning account in Redis.

Keys carry the student id as a Redis Cluster hash tag, so one student's keys share a slot:
- `la:{sid}:account`   hash: `s` the encoded state, `v` its version (optimistic concurrency)
- `la:{sid}:seen`      set of idempotency digests (CloudEvents source + id) already applied
- `la:{sid}:out:<d>`   the outputs a step published, kept for the outbox retention, so a
                       duplicate delivery re-publishes them identically
- `la:held`            sorted set: students with held exam results, by earliest deadline

Applying a batch is two round trips whatever its size: one pipelined read of every touched
student, one pipelined atomic write per student (a Lua script that checks the version, writes the
state, records the digests and stores the outputs together).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from .domain.model import Account, EventRef
from .state_codec import decode_account, encode_account

HELD_INDEX_KEY = "la:held"

_COMMIT_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'v')
if (current or '') ~= ARGV[1] then
  return 0
end
local version = (tonumber(current) or 0) + 1
redis.call('HSET', KEYS[1], 's', ARGV[2], 'v', version)
local retention = tonumber(ARGV[3])
for i = 3, #KEYS do
  local digest = ARGV[2 + (i - 2) * 2]
  local outputs = ARGV[3 + (i - 2) * 2]
  redis.call('SADD', KEYS[2], digest)
  if outputs ~= '' then
    redis.call('SET', KEYS[i], outputs, 'PX', retention)
  end
end
return version
"""


_LOAD_SCRIPT = """
local state = redis.call('HMGET', KEYS[1], 's', 'v')
local reply = {state[1], state[2]}
for i = 3, #KEYS do
  if redis.call('SISMEMBER', KEYS[2], ARGV[i - 2]) == 1 then
    reply[i] = redis.call('GET', KEYS[i]) or ''
  else
    reply[i] = 0
  end
end
return reply
"""


def event_digest(event: EventRef) -> str:
    """The idempotency key: CloudEvents `source` + `id`, hashed to a short fixed size."""
    raw = f"{len(event.source)}:{event.source}{event.id}".encode()
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


def account_key(student_id: str) -> str:
    return f"la:{{{student_id}}}:account"


def seen_key(student_id: str) -> str:
    return f"la:{{{student_id}}}:seen"


def outputs_key(student_id: str, digest: str) -> str:
    return f"la:{{{student_id}}}:out:{digest}"


@dataclass(slots=True)
class LoadedAccount:
    account: Account
    version: str
    seen: dict[str, bytes | None] = field(default_factory=dict)
    """Digests already applied, with their stored outputs (None once the retention passed)."""


@dataclass(frozen=True, slots=True)
class AppliedStep:
    digest: str
    outputs: bytes


@dataclass(frozen=True, slots=True)
class AccountWrite:
    student_id: str
    expected_version: str
    account: Account
    steps: tuple[AppliedStep, ...]
    held_deadline: float | None = None


class AccountStore:
    """Works the same on a single Redis and on a Redis Cluster (`redis.asyncio.RedisCluster`)."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        outbox_retention_seconds: float = 7 * 24 * 3600,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self.redis = redis
        self.outbox_retention_ms = int(outbox_retention_seconds * 1000)
        self._commit_sha = hashlib.sha1(_COMMIT_SCRIPT.encode()).hexdigest()
        self._load_sha = hashlib.sha1(_LOAD_SCRIPT.encode()).hexdigest()
        self._observe = observe

    @property
    def _cluster(self) -> bool:
        return isinstance(self.redis, RedisCluster)

    def _timed(self, operation: str, started: float) -> None:
        if self._observe is not None:
            self._observe(operation, time.perf_counter() - started)

    async def load(self, digests_by_student: dict[str, Sequence[str]]) -> dict[str, LoadedAccount]:
        """Read every touched student in one pipelined round trip (one script call each)."""
        students = list(digests_by_student)
        started = time.perf_counter()
        try:
            replies = await self._execute_load(digests_by_student)
        except NoScriptError:
            await self.redis.script_load(_LOAD_SCRIPT)
            replies = await self._execute_load(digests_by_student)
        self._timed("load", started)
        loaded: dict[str, LoadedAccount] = {}
        for student_id, reply in zip(students, replies, strict=True):
            state, version, *outputs = reply
            entry = LoadedAccount(
                decode_account(student_id, state), version.decode() if version else ""
            )
            for digest, stored in zip(digests_by_student[student_id], outputs, strict=True):
                if stored != 0:
                    entry.seen[digest] = stored or None
            loaded[student_id] = entry
        return loaded

    async def _execute_load(self, digests_by_student: dict[str, Sequence[str]]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for student_id, digests in digests_by_student.items():
                keys = [account_key(student_id), seen_key(student_id)]
                keys.extend(outputs_key(student_id, digest) for digest in digests)
                if self._cluster:
                    pipe.eval(_LOAD_SCRIPT, len(keys), *keys, *digests)
                else:
                    pipe.evalsha(self._load_sha, len(keys), *keys, *digests)
            return await self._checked(pipe)

    async def commit(self, writes: Iterable[AccountWrite]) -> dict[str, bool]:
        """Write each student atomically; False for a student whose version moved meanwhile."""
        writes = list(writes)
        if not writes:
            return {}
        started = time.perf_counter()
        try:
            replies = await self._execute_commit(writes)
        except NoScriptError:
            # a restarted (or new cluster) node lost the script cache: load it and redo; a
            # write that did go through now fails its version check and is reloaded as seen
            await self.redis.script_load(_COMMIT_SCRIPT)
            await self.redis.script_load(_LOAD_SCRIPT)
            replies = await self._execute_commit(writes)
        self._timed("commit", started)
        script_replies = _script_replies(writes, replies)
        return {
            write.student_id: bool(reply)
            for write, reply in zip(writes, script_replies, strict=True)
        }

    async def _execute_commit(self, writes: list[AccountWrite]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for write in writes:
                if write.held_deadline is not None:
                    # an index entry ahead of the state is harmless: the sweeper re-checks
                    pipe.zadd(HELD_INDEX_KEY, {write.student_id: write.held_deadline}, lt=True)
                keys = [account_key(write.student_id), seen_key(write.student_id)]
                args: list[Any] = [
                    write.expected_version,
                    encode_account(write.account),
                    self.outbox_retention_ms,
                ]
                for step in write.steps:
                    keys.append(outputs_key(write.student_id, step.digest))
                    args.extend((step.digest, step.outputs))
                if self._cluster:
                    # cluster pipelines refuse EVALSHA; EVAL carries the script (cached by sha)
                    pipe.eval(_COMMIT_SCRIPT, len(keys), *keys, *args)
                else:
                    pipe.evalsha(self._commit_sha, len(keys), *keys, *args)
            return await self._checked(pipe)

    @staticmethod
    async def _checked(pipe: Any) -> list[Any]:
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, NoScriptError) or (
                isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT")
            ):
                raise NoScriptError(str(reply))
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def get(self, student_id: str) -> Account | None:
        state = await self.redis.hget(account_key(student_id), "s")
        if state is None:
            return None
        return decode_account(student_id, state if isinstance(state, bytes) else state.encode())

    async def due_held(self, now: float, limit: int = 500) -> list[str]:
        members = await self.redis.zrangebyscore(HELD_INDEX_KEY, "-inf", now, start=0, num=limit)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    async def reschedule_held(self, student_id: str, deadline: float | None) -> None:
        if deadline is None:
            await self.redis.zrem(HELD_INDEX_KEY, student_id)
        else:
            await self.redis.zadd(HELD_INDEX_KEY, {student_id: deadline})

    async def ping(self) -> bool:
        return bool(await self.redis.ping())


def _script_replies(writes: list[AccountWrite], replies: list[Any]) -> list[Any]:
    """Pick the script's reply for each write out of the pipeline's replies."""
    picked: list[Any] = []
    position = 0
    for write in writes:
        if write.held_deadline is not None:
            position += 1
        picked.append(replies[position])
        position += 1
    return picked
