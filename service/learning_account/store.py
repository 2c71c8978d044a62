"""Each student's learning account in Redis.

Keys carry the student id as a Redis Cluster hash tag, so one student's keys share a slot:
- `la:{sid}:account`   hash: `s` the account without its year totals and course units, `v`
                       its version (optimistic concurrency), `d` the idempotency digests
                       already applied (8 bytes each, CloudEvents source + id), `t:<year>` the
                       totals and `u:<year>` the course units of one academic year
- `la:{sid}:out:<d>`   the outputs a step published, kept for the outbox retention, so a
                       duplicate delivery re-publishes them identically
- `la:held`            sorted set: students with held exam results, by earliest deadline

Applying a batch is two round trips whatever its size: one pipelined read of every touched
student, one pipelined atomic write per student (a Lua script that checks the version, writes the
state, records the digests and stores the outputs together). Only the academic years a batch
names are read and written, so a student's long history does not make an event much dearer.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from .domain.model import Account, EventRef, immutable
from .state_codec import decode_account, encode_core, encode_units, encode_years

HELD_INDEX_KEY = "la:held"

DIGEST_BYTES = 8

_COMMIT_ONE = """
local function commit_one(keys, argv)
  local current = redis.call('HGET', keys[1], 'v')
  if (current or '') ~= argv[1] then
    return 0
  end
  local version = (tonumber(current) or 0) + 1
  redis.call('HSET', keys[1], 's', argv[2], 'v', version)
  local at = 5
  for i = 1, tonumber(argv[4]) do
    redis.call('HSET', keys[1], argv[at], argv[at + 1])
    at = at + 2
  end
  local retention = tonumber(argv[3])
  local digests = {}
  for i = 2, #keys do
    digests[#digests + 1] = argv[at]
    if argv[at + 1] ~= '' then
      redis.call('SET', keys[i], argv[at + 1], 'PX', retention)
    end
    at = at + 2
  end
  if #digests > 0 then
    local seen = redis.call('HGET', keys[1], 'd') or ''
    redis.call('HSET', keys[1], 'd', seen .. table.concat(digests))
  end
  return version
end
"""

_LOAD_ONE = """
local function load_one(keys, argv)
  local n = tonumber(argv[1])
  local fields = {'s', 'v', 'd'}
  for i = n + 2, #argv do
    fields[#fields + 1] = argv[i]
  end
  local values = redis.call('HMGET', keys[1], unpack(fields))
  local seen = values[3] or ''
  local reply = {values[1], values[2]}
  for i = 1, n do
    local digest = argv[i + 1]
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
      reply[#reply + 1] = redis.call('GET', keys[i + 1]) or ''
    else
      reply[#reply + 1] = 0
    end
  end
  for i = 4, #values do
    reply[#reply + 1] = values[i]
  end
  return reply
end
"""


def _for_each_student(function: str) -> str:
    """Apply `function` to every student of the call: ARGV[1] students, then per student its
    number of keys and of arguments, then all arguments; KEYS in the same student order."""
    return f"""
local count = tonumber(ARGV[1])
local key_at, arg_at = 1, 2 + 2 * count
local replies = {{}}
for s = 1, count do
  local nkeys, nargs = tonumber(ARGV[2 * s]), tonumber(ARGV[2 * s + 1])
  local keys, argv = {{}}, {{}}
  for i = 1, nkeys do keys[i] = KEYS[key_at + i - 1] end
  for i = 1, nargs do argv[i] = ARGV[arg_at + i - 1] end
  replies[s] = {function}(keys, argv)
  key_at, arg_at = key_at + nkeys, arg_at + nargs
end
return replies
"""


# one call per student (a Redis Cluster: each student's keys on their own slot)
_COMMIT_SCRIPT = _COMMIT_ONE + "return commit_one(KEYS, ARGV)\n"
_LOAD_SCRIPT = _LOAD_ONE + "return load_one(KEYS, ARGV)\n"
# one call per batch (a single Redis): the per-command cost of the client is paid once
_COMMIT_MANY_SCRIPT = _COMMIT_ONE + _for_each_student("commit_one")
_LOAD_MANY_SCRIPT = _LOAD_ONE + _for_each_student("load_one")
_SCRIPTS = (_COMMIT_SCRIPT, _LOAD_SCRIPT, _COMMIT_MANY_SCRIPT, _LOAD_MANY_SCRIPT)


def event_digest(event: EventRef) -> str:
    """The idempotency key: CloudEvents `source` + `id`, hashed to 8 bytes (16 hex digits)."""
    raw = f"{len(event.source)}:{event.source}{event.id}".encode()
    return hashlib.blake2b(raw, digest_size=DIGEST_BYTES).hexdigest()


UNITS_FIELD_PREFIX = "u:"
TOTALS_FIELD_PREFIX = "t:"


def units_field(year: int) -> str:
    return f"{UNITS_FIELD_PREFIX}{year}"


def totals_field(year: int) -> str:
    return f"{TOTALS_FIELD_PREFIX}{year}"


def _per_year(fields: Mapping[bytes, bytes], prefix: str) -> dict[int, bytes]:
    """The `<prefix><year>` fields of an account hash, by year."""
    start = prefix.encode()
    return {
        int(name[len(start) :]): blob for name, blob in fields.items() if name.startswith(start)
    }


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


@immutable
class AppliedStep:
    digest: str
    outputs: bytes


@immutable
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
        self._observe = observe

    async def _load_scripts(self) -> None:
        for script in _SCRIPTS:
            await self.redis.script_load(script)

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
            await self._load_scripts()
            replies = await self._execute_load(requests)
        self._timed("load", started)
        loaded: dict[str, LoadedAccount] = {}
        for (student_id, digests, years), reply in zip(requests, replies, strict=True):
            state, version = reply[0], reply[1]
            outputs = reply[2 : 2 + len(digests)]
            fields = reply[2 + len(digests) :]  # per year: its units, its totals
            units = {year: blob for year, blob in zip(years, fields[::2], strict=True) if blob}
            totals = {year: blob for year, blob in zip(years, fields[1::2], strict=True) if blob}
            entry = LoadedAccount(
                decode_account(student_id, state, units, totals),
                version.decode() if version else "",
            )
            for digest, stored in zip(digests, outputs, strict=True):
                if stored != 0:
                    entry.seen[digest] = stored or None
            loaded[student_id] = entry
        return loaded

    async def _execute_load(self, requests: list[tuple[str, list[str], list[int]]]) -> list[Any]:
        calls = []
        for student_id, digests, years in requests:
            keys = [account_key(student_id)]
            keys.extend(outputs_key(student_id, digest) for digest in digests)
            args: list[Any] = [len(digests)]
            args.extend(bytes.fromhex(digest) for digest in digests)
            for year in years:
                args.extend((units_field(year), totals_field(year)))
            calls.append((keys, args))
        return await self._run_scripts(calls, _LOAD_SCRIPT, _LOAD_MANY_SCRIPT)

    async def _run_scripts(
        self,
        calls: list[tuple[list[str], list[Any]]],
        one: str,
        many: str,
        extra: Callable[[Any], int] | None = None,
    ) -> list[Any]:
        """Each call's script reply; one EVALSHA for all on a single Redis, one each on a cluster.

        `extra(pipe)` queues further commands ahead of the scripts and says how many (their
        replies are dropped).
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            queued = extra(pipe) if extra is not None else 0
            if self._cluster:
                for keys, args in calls:
                    # cluster pipelines refuse EVALSHA; EVAL carries the script (cached by sha)
                    pipe.eval(one, len(keys), *keys, *args)
                return (await self._checked(pipe))[queued:]
            all_keys: list[str] = []
            header: list[Any] = [len(calls)]
            all_args: list[Any] = []
            for keys, args in calls:
                all_keys.extend(keys)
                header.extend((len(keys), len(args)))
                all_args.extend(args)
            pipe.evalsha(_sha(many), len(all_keys), *all_keys, *header, *all_args)
            replies = await self._checked(pipe)
            return list(replies[queued])

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
            await self._load_scripts()
            replies = await self._execute_commit(writes)
        self._timed("commit", started)
        return {write.student_id: bool(reply) for write, reply in zip(writes, replies, strict=True)}

    async def _execute_commit(self, writes: list[AccountWrite]) -> list[Any]:
        calls = []
        for write in writes:
            keys = [account_key(write.student_id)]
            units = encode_units(write.account)
            totals = encode_years(write.account)
            args: list[Any] = [
                write.expected_version,
                encode_core(write.account),
                self.outbox_retention_ms,
                len(units) + len(totals),
            ]
            for year, rows in units.items():
                args.extend((units_field(year), rows))
            for year, row in totals.items():
                args.extend((totals_field(year), row))
            for step in write.steps:
                keys.append(outputs_key(write.student_id, step.digest))
                args.extend((bytes.fromhex(step.digest), step.outputs))
            calls.append((keys, args))

        def index_held(pipe: Any) -> int:
            held = [write for write in writes if write.held_deadline is not None]
            for write in held:
                # an index entry ahead of the state is harmless: the sweeper re-checks
                pipe.zadd(HELD_INDEX_KEY, {write.student_id: write.held_deadline}, lt=True)
            return len(held)

        return await self._run_scripts(calls, _COMMIT_SCRIPT, _COMMIT_MANY_SCRIPT, index_held)

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
        fields: Any = await self.redis.hgetall(account_key(student_id))
        if b"s" not in fields:
            return None
        units = _per_year(fields, UNITS_FIELD_PREFIX) if with_units else {}
        totals = _per_year(fields, TOTALS_FIELD_PREFIX)
        return decode_account(student_id, fields[b"s"], units, totals)

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


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()
