"""Each student's learning account in Redis.

Keys carry the student id as a Redis Cluster hash tag, so one student's keys share a slot:
- `la:{sid}:account`   hash: `s` the account without its course units, `v` its version
                       (optimistic concurrency), `d` the idempotency digests already applied
                       (8 bytes each, CloudEvents source + id), `u:<year>` the course units of
                       one academic year
- `la:{sid}:out:<d>`   the outputs a step published, kept for the outbox retention, so a
                       duplicate delivery re-publishes them identically
- `la:held`            sorted set: students with held exam results, by earliest deadline

Applying a batch is two round trips whatever its size: one pipelined read of every touched
student, one pipelined atomic write per student (a Lua script that checks the version, writes the
state, records the digests and stores the outputs together). Only the academic years a batch
names are read and written, so a student's long history does not make an event dearer.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from .domain.model import Account, EventRef
from .state_codec import decode_account, encode_core, encode_units

HELD_INDEX_KEY = "la:held"

DIGEST_BYTES = 8

_COMMIT_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'v')
if (current or '') ~= ARGV[1] then
  return 0
end
local version = (tonumber(current) or 0) + 1
redis.call('HSET', KEYS[1], 's', ARGV[2], 'v', version)
local at = 5
for i = 1, tonumber(ARGV[4]) do
  redis.call('HSET', KEYS[1], ARGV[at], ARGV[at + 1])
  at = at + 2
end
local retention = tonumber(ARGV[3])
local digests = {}
for i = 2, #KEYS do
  digests[#digests + 1] = ARGV[at]
  if ARGV[at + 1] ~= '' then
    redis.call('SET', KEYS[i], ARGV[at + 1], 'PX', retention)
  end
  at = at + 2
end
if #digests > 0 then
  local seen = redis.call('HGET', KEYS[1], 'd') or ''
  redis.call('HSET', KEYS[1], 'd', seen .. table.concat(digests))
end
return version
"""

_LOAD_SCRIPT = """
local n = tonumber(ARGV[1])
local fields = {'s', 'v', 'd'}
for i = n + 2, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local values = redis.call('HMGET', KEYS[1], unpack(fields))
local seen = values[3] or ''
local reply = {values[1], values[2]}
for i = 1, n do
  local digest = ARGV[i + 1]
  local found = false
  local start = 1
  while true do
    local at = string.find(seen, digest, start, true)
    if not at then break end
    if (at - 1) % 8 == 0 then
      found = true
      break
    end
    start = at + 1
  end
  if found then
    reply[#reply + 1] = redis.call('GET', KEYS[i + 1]) or ''
  else
    reply[#reply + 1] = 0
  end
end
for i = 4, #values do
  reply[#reply + 1] = values[i]
end
return reply
"""


def event_digest(event: EventRef) -> str:
    """The idempotency key: CloudEvents `source` + `id`, hashed to 8 bytes (16 hex digits)."""
    raw = f"{len(event.source)}:{event.source}{event.id}".encode()
    return hashlib.blake2b(raw, digest_size=DIGEST_BYTES).hexdigest()


def units_field(year: int) -> str:
    return f"u:{year}"


def account_key(student_id: str) -> str:
    return f"la:{{{student_id}}}:account"


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

    async def load(
        self,
        digests_by_student: Mapping[str, Sequence[str]],
        years_by_student: Mapping[str, Iterable[int]] | None = None,
    ) -> dict[str, LoadedAccount]:
        """Read every touched student in one pipelined round trip (one script call each).

        Only the course units of the given academic years are read: the rules look up units of
        the event's own year only.
        """
        requests = [
            (
                student_id,
                list(digests),
                sorted(set((years_by_student or {}).get(student_id, ()))),
            )
            for student_id, digests in digests_by_student.items()
        ]
        started = time.perf_counter()
        try:
            replies = await self._execute_load(requests)
        except NoScriptError:
            await self.redis.script_load(_LOAD_SCRIPT)
            replies = await self._execute_load(requests)
        self._timed("load", started)
        loaded: dict[str, LoadedAccount] = {}
        for (student_id, digests, years), reply in zip(requests, replies, strict=True):
            state, version = reply[0], reply[1]
            outputs = reply[2 : 2 + len(digests)]
            units = {
                year: blob
                for year, blob in zip(years, reply[2 + len(digests) :], strict=True)
                if blob
            }
            entry = LoadedAccount(
                decode_account(student_id, state, units), version.decode() if version else ""
            )
            for digest, stored in zip(digests, outputs, strict=True):
                if stored != 0:
                    entry.seen[digest] = stored or None
            loaded[student_id] = entry
        return loaded

    async def _execute_load(self, requests: list[tuple[str, list[str], list[int]]]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for student_id, digests, years in requests:
                keys = [account_key(student_id)]
                keys.extend(outputs_key(student_id, digest) for digest in digests)
                args: list[Any] = [len(digests)]
                args.extend(bytes.fromhex(digest) for digest in digests)
                args.extend(units_field(year) for year in years)
                if self._cluster:
                    pipe.eval(_LOAD_SCRIPT, len(keys), *keys, *args)
                else:
                    pipe.evalsha(self._load_sha, len(keys), *keys, *args)
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
                keys = [account_key(write.student_id)]
                units = encode_units(write.account)
                args: list[Any] = [
                    write.expected_version,
                    encode_core(write.account),
                    self.outbox_retention_ms,
                    len(units),
                ]
                for year, rows in units.items():
                    args.extend((units_field(year), rows))
                for step in write.steps:
                    keys.append(outputs_key(write.student_id, step.digest))
                    args.extend((bytes.fromhex(step.digest), step.outputs))
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

    async def get(self, student_id: str, *, with_units: bool = False) -> Account | None:
        """The account for reading (no course units unless asked), None if never written."""
        if not with_units:
            state: Any = await self.redis.hget(account_key(student_id), "s")
            return None if state is None else decode_account(student_id, state)
        fields: Any = await self.redis.hgetall(account_key(student_id))
        if b"s" not in fields:
            return None
        units = {int(name[2:]): blob for name, blob in fields.items() if name.startswith(b"u:")}
        return decode_account(student_id, fields[b"s"], units)

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
