"""Each student's learning account in Redis.

Keys carry the student id as a Redis Cluster hash tag, so one student's keys share a slot:
- `la:{sid}:account`   hash: `s` the account without its year totals and course units, `v`
                       its version (optimistic concurrency), `k` the events applied, each its
                       idempotency digest (8 bytes, CloudEvents source + id) and its content
                       digest (4 bytes, `type` + the validated `data`), in order: the first
                       entry of a digest is the event that stands, a later one a refused
                       re-use (`id_conflict`); `d` idempotency digests alone (8 bytes each,
                       as accounts written before content digests have them: a re-delivery of
                       one is absorbed whatever its content), `p` those of sweeper steps whose
                       outputs may not be published yet, `t:<year>` the totals and
                       `u:<year>` the course units of one academic year
- `la:{sid}:out:<d>`   the outputs a step published, kept for the outbox retention, so a
                       duplicate delivery re-publishes them identically (`<d><c>`, digest
                       and content digest, for a refused re-use)
- `la:held`            sorted set: students with held exam results, by earliest deadline (0
                       while refusals wait for publication)

Applying a batch is two round trips whatever its size: one pipelined read of every touched
student, one pipelined atomic write per student (a Lua script that checks the version, writes the
state, records the digests and stores the outputs together). Only the academic years a batch
names are read and written, so a student's long history does not make an event much dearer.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from learning_account.adapters.state_codec import (
    decode_account,
    encode_core,
    encode_units,
    encode_years,
)
from learning_account.domain.events import NOTHING_TOUCHED, Touched
from learning_account.domain.model import Account, EventRef, immutable

HELD_INDEX_KEY = "la:held"

# The idempotency digest is compared with every event of the account: at 8 bytes two distinct
# events of a 500-event account collide with odds near n²/2^65 (1 in 10^14). The content digest
# is compared only when a digest was already used, so a re-use is missed only when its content
# also matches in 4 bytes (1 in 4·10^9 per re-use); deliberately matching a content not yet sent
# takes a producer that may write the topic at all, which Kafka ACLs and LA_ALLOWED_SOURCES stop.
DIGEST_BYTES = 8
CONTENT_DIGEST_BYTES = 4
ENTRY_BYTES = DIGEST_BYTES + CONTENT_DIGEST_BYTES

# Every script checks everything a write could fail on before its first write, and a script
# over many students checks them all first: Redis does not roll back a script that fails halfway
# (and refuses only the first write of a script for lack of memory).
_HELPERS = """
local function is_number(text)
  local n = tonumber(text)
  return n ~= nil and n == n
end

local function of_type(key, ...)
  local kind = redis.call('TYPE', key).ok
  for _, allowed in ipairs({...}) do
    if kind == allowed then return true end
  end
  return false
end

local function has_digest(list, digest)
  local start = 1
  while true do
    local at = string.find(list, digest, start, true)
    if not at then return false end
    if (at - 1) % 8 == 0 then return true end
    start = at + 1
  end
end

-- the content digests a list of (digest, content digest) entries records for `digest`, in order
local function contents_of(list, digest)
  local found, start = {}, 1
  while true do
    local at = string.find(list, digest, start, true)
    if not at then return found end
    if (at - 1) % $ENTRY == 0 then
      found[#found + 1] = string.sub(list, at + 8, at + $ENTRY - 1)
      start = at + $ENTRY
    else
      start = at + 1
    end
  end
end
""".replace("$ENTRY", str(ENTRY_BYTES))

# ARGV: 1 expected version, 2 core, 3 outbox retention (ms), 4 number of year fields, 5 the held
# index's score for this student (a number, '-' to remove, '' to leave it), 6 '1' when the steps'
# outputs still wait for publication (their digests go to `p`), 7 the student id; then the year
# fields (name, value), then per outputs key its entry and outputs. An entry is a digest with its
# content digest (to `k`), or a digest alone (to `p` when pending, else to `d`).
_COMMIT_ONE = """
local function check_commit(keys, argv)
  local nfields = tonumber(argv[4])
  if #argv < 7 or not nfields or nfields < 0 or nfields % 1 ~= 0
      or #argv ~= 7 + 2 * nfields + 2 * (#keys - 1) then
    return 'commit: the arguments do not match the keys'
  end
  local retention = tonumber(argv[3])
  if not retention or retention < 1 or retention % 1 ~= 0 then
    return 'commit: the outbox retention must be a whole number of milliseconds, at least 1'
  end
  if argv[5] ~= '' and argv[5] ~= '-' and not is_number(argv[5]) then
    return 'commit: the held index score is not a number'
  end
  if argv[6] ~= '' and argv[6] ~= '1' then
    return 'commit: the pending flag is neither empty nor 1'
  end
  for at = 8 + 2 * nfields, #argv, 2 do
    local size = #argv[at]
    if argv[6] == '1' and size ~= 8 then return 'commit: a pending digest is not 8 bytes' end
    if size ~= 8 and size ~= $ENTRY then return 'commit: a digest is not 8 or $ENTRY bytes' end
  end
  if not of_type(keys[1], 'hash', 'none') then return 'commit: the account is not a hash' end
  local current = redis.call('HGET', keys[1], 'v')
  if current and not is_number(current) then return 'commit: the stored version is not a number' end
  return nil
end

local function commit_one(keys, argv, index)
  local current = redis.call('HGET', keys[1], 'v')
  if (current or '') ~= argv[1] then
    return 0
  end
  local version = (tonumber(current) or 0) + 1
  redis.call('HSET', keys[1], 's', argv[2], 'v', version)
  local at = 8
  for i = 1, tonumber(argv[4]) do
    redis.call('HSET', keys[1], argv[at], argv[at + 1])
    at = at + 2
  end
  local retention = tonumber(argv[3])
  local added = {d = {}, k = {}, p = {}}
  for i = 2, #keys do
    local list = argv[6] == '1' and 'p' or (#argv[at] == 8 and 'd' or 'k')
    local entries = added[list]
    entries[#entries + 1] = argv[at]
    if argv[at + 1] ~= '' then
      redis.call('SET', keys[i], argv[at + 1], 'PX', retention)
    end
    at = at + 2
  end
  local pending = redis.call('HGET', keys[1], 'p') or ''
  for _, list in ipairs({'d', 'k', 'p'}) do
    if #added[list] > 0 then
      local listed = (redis.call('HGET', keys[1], list) or '') .. table.concat(added[list])
      redis.call('HSET', keys[1], list, listed)
      if list == 'p' then pending = listed end
    end
  end
  if index then
    if pending ~= '' then
      redis.call('ZADD', index, 0, argv[7])
    elseif argv[5] == '-' then
      redis.call('ZREM', index, argv[7])
    elseif argv[5] ~= '' then
      redis.call('ZADD', index, argv[5], argv[7])
    end
  end
  return {version, pending ~= '' and 1 or 0}
end
""".replace("$ENTRY", str(ENTRY_BYTES))

# ARGV: 1 the version the caller last wrote or read, 2 the student id, 3 the held index's score
# ('' when nothing is held), 4 the published digests (8 bytes each, concatenated).
_SETTLE_ONE = """
local function check_settle(keys, argv)
  if #keys ~= 1 or #argv ~= 4 then return 'settle: the arguments do not match the keys' end
  if argv[3] ~= '' and not is_number(argv[3]) then
    return 'settle: the held index score is not a number'
  end
  if #argv[4] % 8 ~= 0 then return 'settle: a digest is not 8 bytes' end
  if not of_type(keys[1], 'hash', 'none') then return 'settle: the account is not a hash' end
  return nil
end

local function settle_one(keys, argv, index)
  local pending = redis.call('HGET', keys[1], 'p') or ''
  if pending ~= '' and argv[4] ~= '' then
    local kept = {}
    for at = 1, #pending, 8 do
      local digest = string.sub(pending, at, at + 7)
      if not has_digest(argv[4], digest) then kept[#kept + 1] = digest end
    end
    pending = table.concat(kept)
    if pending == '' then
      redis.call('HDEL', keys[1], 'p')
    else
      redis.call('HSET', keys[1], 'p', pending)
    end
  end
  -- a write since then set the index itself, from the state it wrote
  if index and (redis.call('HGET', keys[1], 'v') or '') == argv[1] then
    if pending ~= '' then
      redis.call('ZADD', index, 0, argv[2])
    elseif argv[3] ~= '' then
      redis.call('ZADD', index, argv[3], argv[2])
    else
      redis.call('ZREM', index, argv[2])
    end
  end
  return pending ~= '' and 1 or 0
end
"""

# ARGV: 1 number of events n, then per event its digest and content digest, then the year fields
# to read; KEYS: the account, then per event its outputs key and that of a refused re-use. Per
# event the reply is its stored outputs when it was seen (the same content, or a digest alone in
# `d`), 1 when its digest stands for other content (a re-use), 0 when it is new.
_LOAD_ONE = """
local function load_one(keys, argv)
  local n = tonumber(argv[1])
  local fields = {'s', 'v', 'd', 'p', 'k'}
  for i = 2 * n + 2, #argv do
    fields[#fields + 1] = argv[i]
  end
  local values = redis.call('HMGET', keys[1], unpack(fields))
  local digests_alone, entries = values[3] or '', values[5] or ''
  local reply = {values[1], values[2], values[4]}
  for i = 1, n do
    local digest, content = argv[2 * i], argv[2 * i + 1]
    local outcome = 0
    if has_digest(digests_alone, digest) then
      outcome = redis.call('GET', keys[2 * i]) or ''
    else
      local contents = contents_of(entries, digest)
      if contents[1] == content then
        outcome = redis.call('GET', keys[2 * i]) or ''
      elseif #contents > 0 then
        outcome = 1
        for j = 2, #contents do
          if contents[j] == content then outcome = redis.call('GET', keys[2 * i + 1]) or '' end
        end
      end
    end
    reply[#reply + 1] = outcome
  end
  for i = 6, #values do
    reply[#reply + 1] = values[i]
  end
  return reply
end
"""

# a claimed index entry is released (rescheduled or removed) only if no writer re-scored it since
_RELEASE_CLAIM = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then
  return 0
end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
"""


def _for_each_student(function: str, check: str | None = None, index: bool = False) -> str:
    """Apply `function` to every student of the call: ARGV[1] students, then per student its
    number of keys and of arguments, then all arguments; KEYS in the same student order, then
    the held index when `index`. With `check`, every student is checked before the first write.
    """
    index_key = "KEYS[#KEYS]" if index else "nil"
    checks = (
        f"""
if {index_key} and not of_type({index_key}, 'zset', 'none') then
  return redis.error_reply('the held index is not a sorted set')
end
for s = 1, count do
  local failure = {check}(calls[s][1], calls[s][2])
  if failure then return redis.error_reply(failure) end
end"""
        if check
        else ""
    )
    return f"""
local count = tonumber(ARGV[1])
if not count or count < 0 or count % 1 ~= 0 or #ARGV < 1 + 2 * count then
  return redis.error_reply('the student counts do not match the arguments')
end
local key_at, arg_at = 1, 2 + 2 * count
local calls = {{}}
for s = 1, count do
  local nkeys, nargs = tonumber(ARGV[2 * s]), tonumber(ARGV[2 * s + 1])
  if not nkeys or not nargs or nkeys < 0 or nargs < 0 then
    return redis.error_reply('the student counts do not match the arguments')
  end
  local keys, argv = {{}}, {{}}
  for i = 1, nkeys do keys[i] = KEYS[key_at + i - 1] end
  for i = 1, nargs do argv[i] = ARGV[arg_at + i - 1] end
  calls[s] = {{keys, argv}}
  key_at, arg_at = key_at + nkeys, arg_at + nargs
end
if key_at - 1 ~= #KEYS - {1 if index else 0} or arg_at - 1 ~= #ARGV then
  return redis.error_reply('the student counts do not match the arguments')
end{checks}
local replies = {{}}
for s = 1, count do
  replies[s] = {function}(calls[s][1], calls[s][2], {index_key})
end
return replies
"""


def _checked_one(check: str, function: str) -> str:
    """One student's call (a Redis Cluster: the held index lives on another slot)."""
    return f"""
local failure = {check}(KEYS, ARGV)
if failure then return redis.error_reply(failure) end
return {function}(KEYS, ARGV, nil)
"""


# one call per student (a Redis Cluster: each student's keys on their own slot)
_COMMIT_SCRIPT = _HELPERS + _COMMIT_ONE + _checked_one("check_commit", "commit_one")
_SETTLE_SCRIPT = _HELPERS + _SETTLE_ONE + _checked_one("check_settle", "settle_one")
_LOAD_SCRIPT = _HELPERS + _LOAD_ONE + "return load_one(KEYS, ARGV)\n"
# one call per batch (a single Redis): the per-command cost of the client is paid once, and the
# held index is written in the same script as the accounts
_COMMIT_MANY_SCRIPT = (
    _HELPERS + _COMMIT_ONE + _for_each_student("commit_one", "check_commit", index=True)
)
_SETTLE_MANY_SCRIPT = (
    _HELPERS + _SETTLE_ONE + _for_each_student("settle_one", "check_settle", index=True)
)
_LOAD_MANY_SCRIPT = _HELPERS + _LOAD_ONE + _for_each_student("load_one")
_SCRIPTS = (
    _COMMIT_SCRIPT,
    _SETTLE_SCRIPT,
    _LOAD_SCRIPT,
    _COMMIT_MANY_SCRIPT,
    _SETTLE_MANY_SCRIPT,
    _LOAD_MANY_SCRIPT,
    _RELEASE_CLAIM,
)


def next_version(version: str) -> str:
    """The version a successful commit on `version` writes (as the commit script counts)."""
    return str(int(version or 0) + 1)


def event_digest(event: EventRef) -> str:
    """The idempotency key within a student's account: CloudEvents `source` + `id`, hashed to 8
    bytes (16 hex digits)."""
    raw = f"{len(event.source)}:{event.source}{event.id}".encode()
    return hashlib.blake2b(raw, digest_size=DIGEST_BYTES).hexdigest()


def content_digest(canonical: bytes) -> str:
    """An event's content (`wire.canonical_content`) hashed to 4 bytes (8 hex digits)."""
    return hashlib.blake2b(canonical, digest_size=CONTENT_DIGEST_BYTES).hexdigest()


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


Identity = tuple[str, str]
"""An event as the store knows it: its idempotency digest and its content digest (hex)."""


@dataclass(slots=True)
class LoadedAccount:
    account: Account
    version: str
    seen: dict[Identity, bytes | None] = field(default_factory=dict)
    """Events already applied (or refused as a re-use), with their stored outputs (None once
    the retention passed)."""
    reused: set[Identity] = field(default_factory=set)
    """Events whose digest an applied event with other content already has."""
    pending: tuple[str, ...] = ()
    """Digests of sweeper steps whose stored outputs may not have been published yet."""
    unreadable: str | None = None
    """Why the stored state could not be decoded (`account` is then an empty one)."""


@immutable
class AppliedStep:
    digest: str
    outputs: bytes
    content: str | None = None
    """The event's content digest; None for a sweeper's step (its event is recorded already)."""
    reuse: bool = False
    """A refused re-use of an applied digest: its outputs are kept under digest and content."""

    @property
    def outputs_name(self) -> str:
        return self.digest + (self.content or "") if self.reuse else self.digest

    @property
    def entry(self) -> bytes:
        return bytes.fromhex(self.digest + (self.content or ""))


@immutable
class AccountWrite:
    student_id: str
    expected_version: str
    account: Account
    steps: tuple[AppliedStep, ...]
    held_deadline: float | None = None
    was_held: bool = False
    """The account held results as loaded: the held index may list it."""
    pending: bool = False
    """The steps are the sweeper's: their outputs are published after the write, and the
    student stays due in the held index until `settle_held` says they were."""
    touched: Touched = NOTHING_TOUCHED
    """The year totals and course units the steps changed: only their years are written."""
    read: Account | None = None
    """The account as loaded: a written year keeps the unit rows read for it."""


@immutable
class HeldClaim:
    """A sweeper's hold on a student's held-index entry (a Redis Cluster only: `marker` is the
    due score it set, released by `settle_held` unless a writer re-scored the entry since)."""

    marker: int | None


class AccountStore:
    """Works the same on a single Redis and on a Redis Cluster (`redis.asyncio.RedisCluster`).

    The held index (`la:held`) never lists a student later than its earliest deadline, nor drops
    a student that holds results or has unpublished sweeper outputs (then its score is 0); an
    early or stale entry only costs the sweeper a look. On a single Redis the commit and settle
    scripts write the entry with the account. On a cluster it lives on another slot: a writer
    sets it after its commit, and the sweeper first claims it (a negative score, due at once, so
    a crash leaves it due), then reads, writes and publishes, and releases the claim only if no
    writer re-scored the entry meanwhile (a later writer's score stands).
    """

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        outbox_retention_seconds: float = 7 * 24 * 3600,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        if not outbox_retention_seconds >= 0.001 or math.isinf(outbox_retention_seconds):
            raise ValueError(
                f"the outbox retention must be at least 1 ms, not {outbox_retention_seconds!r} s"
            )
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
        events_by_student: Mapping[str, Sequence[Identity]],
        years_by_student: Mapping[str, Iterable[int]] | None = None,
    ) -> dict[str, LoadedAccount]:
        """Read every touched student in one pipelined round trip (one script call each).

        Only the course units of the given academic years are read: the rules look up units of
        the event's own year only.
        """
        requests = [
            (
                student_id,
                list(events),
                sorted(set((years_by_student or {}).get(student_id, ()))),
            )
            for student_id, events in events_by_student.items()
        ]
        started = time.perf_counter()
        try:
            replies = await self._execute_load(requests)
        except NoScriptError:
            await self._load_scripts()
            replies = await self._execute_load(requests)
        self._timed("load", started)
        loaded: dict[str, LoadedAccount] = {}
        for (student_id, events, years), reply in zip(requests, replies, strict=True):
            state, version, pending = reply[0], reply[1], reply[2] or b""
            outputs = reply[3 : 3 + len(events)]
            fields = reply[3 + len(events) :]  # per year: its units, its totals
            units = {year: blob for year, blob in zip(years, fields[::2], strict=True) if blob}
            totals = {year: blob for year, blob in zip(years, fields[1::2], strict=True) if blob}
            unreadable = None
            try:
                account = decode_account(student_id, state, units, totals, read_years=years)
            except Exception as error:  # one corrupt account must not fail everyone's batch
                account, unreadable = Account(student_id), repr(error)
            entry = LoadedAccount(
                account,
                version.decode() if version else "",
                pending=_digests(pending),
                unreadable=unreadable,
            )
            for identity, stored in zip(events, outputs, strict=True):
                if stored == 1:
                    entry.reused.add(identity)
                elif stored != 0:
                    entry.seen[identity] = stored or None
            loaded[student_id] = entry
        return loaded

    async def _execute_load(
        self, requests: list[tuple[str, list[Identity], list[int]]]
    ) -> list[Any]:
        calls = []
        for student_id, events, years in requests:
            keys = [account_key(student_id)]
            args: list[Any] = [len(events)]
            for digest, content in events:
                keys.extend(
                    (outputs_key(student_id, digest), outputs_key(student_id, digest + content))
                )
                args.extend((bytes.fromhex(digest), bytes.fromhex(content)))
            for year in years:
                args.extend((units_field(year), totals_field(year)))
            calls.append((keys, args))
        return await self._run_scripts(calls, _LOAD_SCRIPT, _LOAD_MANY_SCRIPT)

    async def _run_scripts(
        self,
        calls: list[tuple[list[str], list[Any]]],
        one: str,
        many: str,
        *,
        index: bool = False,
    ) -> list[Any]:
        """Each call's script reply; one EVALSHA for all on a single Redis (with the held index
        as the last key when `index`), one EVAL each on a cluster."""
        async with self.redis.pipeline(transaction=False) as pipe:
            if self._cluster:
                for keys, args in calls:
                    # cluster pipelines refuse EVALSHA; EVAL carries the script (cached by sha)
                    pipe.eval(one, len(keys), *keys, *args)
                return await self._checked(pipe)
            all_keys: list[str] = []
            header: list[Any] = [len(calls)]
            all_args: list[Any] = []
            for keys, args in calls:
                all_keys.extend(keys)
                header.extend((len(keys), len(args)))
                all_args.extend(args)
            if index:
                all_keys.append(HELD_INDEX_KEY)
            pipe.evalsha(_sha(many), len(all_keys), *all_keys, *header, *all_args)
            replies = await self._checked(pipe)
            return list(replies[0])

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
        if self._cluster:
            await self._index_after_commit(writes, replies)
        self._timed("commit", started)
        return {write.student_id: bool(reply) for write, reply in zip(writes, replies, strict=True)}

    async def _execute_commit(self, writes: list[AccountWrite]) -> list[Any]:
        calls = []
        for write in writes:
            keys = [account_key(write.student_id)]
            units = encode_units(write.account, write.touched.units, write.read)
            totals = encode_years(write.account, write.touched.totals)
            args: list[Any] = [
                write.expected_version,
                encode_core(write.account),
                self.outbox_retention_ms,
                len(units) + len(totals),
                _index_score(write.held_deadline, remove=write.was_held),
                "1" if write.pending else "",
                write.student_id,
            ]
            for year, rows in units.items():
                args.extend((units_field(year), rows))
            for year, row in totals.items():
                args.extend((totals_field(year), row))
            for step in write.steps:
                keys.append(outputs_key(write.student_id, step.outputs_name))
                args.extend((step.entry, step.outputs))
            calls.append((keys, args))
        return await self._run_scripts(calls, _COMMIT_SCRIPT, _COMMIT_MANY_SCRIPT, index=True)

    async def _index_after_commit(self, writes: list[AccountWrite], replies: list[Any]) -> None:
        """A cluster's held index, set after the commits that went through (see the class)."""
        scores: dict[str, float] = {}
        for write, reply in zip(writes, replies, strict=True):
            if not reply or write.pending:
                continue  # the sweeper's own write: its claim keeps the entry due
            if reply[1]:
                scores[write.student_id] = 0
            elif write.held_deadline is not None:
                scores[write.student_id] = write.held_deadline
        if scores:
            await self.redis.zadd(HELD_INDEX_KEY, scores)

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
        return decode_account(student_id, fields[b"s"], units, totals, with_units=with_units)

    async def due_held(self, now: float, limit: int = 500) -> list[str]:
        members = await self.redis.zrangebyscore(HELD_INDEX_KEY, "-inf", now, start=0, num=limit)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    async def claim_held(self, student_id: str) -> HeldClaim | None:
        """Hold a due index entry while sweeping it; None if it is gone (swept meanwhile)."""
        if not self._cluster:
            return HeldClaim(None)  # the scripts write the index with the account
        marker = -secrets.randbelow(2**52) - 1
        changed = await self.redis.zadd(HELD_INDEX_KEY, {student_id: marker}, xx=True, ch=True)
        return HeldClaim(marker) if changed else None

    async def stored_outputs(self, student_id: str, digests: Sequence[str]) -> list[bytes | None]:
        """The outputs stored for these steps (None once the retention passed)."""
        if not digests:
            return []
        values: list[Any] = await self.redis.mget([outputs_key(student_id, d) for d in digests])
        return [value or None for value in values]

    async def settle_held(
        self,
        student_id: str,
        version: str,
        published: Sequence[str],
        deadline: float | None,
        claim: HeldClaim,
    ) -> None:
        """After a sweep of the account at `version`: drop the published digests from the
        pending ones, and schedule the student's next sweep at `deadline` (None: nothing held)
        unless a write since then scheduled it."""
        args: list[Any] = [
            version,
            student_id,
            _index_score(deadline, remove=False),
            b"".join(bytes.fromhex(digest) for digest in published),
        ]
        keys = [account_key(student_id)]
        try:
            replies = await self._run_scripts(
                [(keys, args)], _SETTLE_SCRIPT, _SETTLE_MANY_SCRIPT, index=True
            )
        except NoScriptError:
            await self._load_scripts()
            replies = await self._run_scripts(
                [(keys, args)], _SETTLE_SCRIPT, _SETTLE_MANY_SCRIPT, index=True
            )
        if claim.marker is not None:
            score = "0" if replies[0] else _index_score(deadline, remove=False)
            await self.redis.eval(
                _RELEASE_CLAIM, 1, HELD_INDEX_KEY, student_id, claim.marker, score
            )

    async def raw_accounts(self, student_ids: Sequence[str]) -> dict[str, dict[bytes, bytes]]:
        """Each student's whole account hash as stored, in one pipelined round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for student_id in student_ids:
                pipe.hgetall(account_key(student_id))
            replies: list[Any] = await pipe.execute()
        return dict(zip(student_ids, replies, strict=True))

    async def restore_account(
        self,
        student_id: str,
        fields: Mapping[bytes, bytes],
        held_deadline: Callable[[Account], float | None],
    ) -> bool:
        """Write an account hash as `raw_accounts` read it, and its held-index entry; False (and
        nothing written) when a later version of the account is already stored."""
        key = account_key(student_id)
        current = await self.redis.hget(key, "v")
        if current is not None and int(current) > int(fields.get(b"v") or 0):
            return False
        account = decode_account(
            student_id,
            fields.get(b"s"),
            _per_year(fields, UNITS_FIELD_PREFIX),
            _per_year(fields, TOTALS_FIELD_PREFIX),
        )
        await self.redis.delete(key)
        await self.redis.hset(key, mapping=dict(fields))  # type: ignore[arg-type]
        deadline = held_deadline(account)
        if fields.get(b"p"):
            await self.redis.zadd(HELD_INDEX_KEY, {student_id: 0})
        elif deadline is not None:
            await self.redis.zadd(HELD_INDEX_KEY, {student_id: deadline})
        else:
            await self.redis.zrem(HELD_INDEX_KEY, student_id)
        return True

    async def forget_account(self, student_id: str) -> None:
        await self.redis.delete(account_key(student_id))
        await self.redis.zrem(HELD_INDEX_KEY, student_id)

    async def restore_outputs(
        self, student_id: str, digest: str, outputs: bytes, keep_ms: int
    ) -> None:
        """A step's stored outputs, kept `keep_ms` more milliseconds."""
        await self.redis.set(outputs_key(student_id, digest), outputs, px=keep_ms)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())


def _index_score(deadline: float | None, *, remove: bool) -> str:
    if deadline is not None:
        return repr(deadline)
    return "-" if remove else ""


def _digests(listed: bytes) -> tuple[str, ...]:
    return tuple(listed[at : at + DIGEST_BYTES].hex() for at in range(0, len(listed), DIGEST_BYTES))


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()
