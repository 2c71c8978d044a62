"""Each student's learning account in Redis (the keys and fields: `redis_layout`).

Applying a batch is two round trips whatever its size (three when it re-delivers applied
events: their stored outputs are read apart): one pipelined read of every touched student, one
pipelined atomic write per student (a Lua script, `lua/`, that checks the version,
writes the state, records the digests and stores the outputs together). Only the academic years
a batch names are read and written, so a student's long history does not make an event much
dearer.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from learning_account.adapters.lua import (
    COMMIT_MANY_SCRIPT,
    COMMIT_SCRIPT,
    LOAD_MANY_SCRIPT,
    RELEASE_CLAIM_SCRIPT,
    SCRIPTS,
    SETTLE_MANY_SCRIPT,
    SETTLE_SCRIPT,
)
from learning_account.adapters.redis_layout import (
    ACCOUNT_LOAD_FIELDS,
    HELD_INDEX_KEY,
    account_key,
    decode_fields,
    encode_state,
    index_score,
    load_fields,
    loaded,
    outputs_key,
    seen_key,
)
from learning_account.domain.model import Account
from learning_account.processing.store import (
    AccountWrite,
    HeldClaim,
    Identity,
    LoadedAccount,
    retention_ms,
)

if TYPE_CHECKING:
    from learning_account.processing.store import AccountStore

PENDING = 2
"""The commit script's reply for a student written with digests pending (0: its version moved,
nothing written; 1: written)."""


class RedisStore:
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
        self.redis = redis
        self.outbox_retention_ms = retention_ms(outbox_retention_seconds)
        self._observe = observe

    async def _load_scripts(self) -> None:
        for script in SCRIPTS:
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
        """Read every touched student in one pipelined round trip, and a second one for the
        stored outputs of events already applied.

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
        return {
            student_id: loaded(student_id, events, years, values, outcomes)
            for (student_id, events, years), (values, outcomes) in zip(
                requests, replies, strict=True
            )
        }

    async def _execute_load(
        self, requests: list[tuple[str, list[Identity], list[int]]]
    ) -> list[tuple[list[Any], list[Any]]]:
        """One HMGET per student (each atomic; on a single Redis all in one script call), then
        the stored outputs of the events seen: a digest recorded in the account had its outputs
        stored in the same commit, and a digest once recorded stays, so the second read finds
        what the first one implies."""
        async with self.redis.pipeline(transaction=False) as pipe:
            if self._cluster:
                for student_id, _, years in requests:
                    pipe.hmget(account_key(student_id), [*ACCOUNT_LOAD_FIELDS, *load_fields(years)])
                accounts = await self._checked(pipe)
            else:
                accounts = await self._load_many(pipe, requests)
        found = [
            [seen_key(student_id, values[2] or b"", values[4] or b"", event) for event in events]
            for (student_id, events, _), values in zip(requests, accounts, strict=True)
        ]
        wanted = [key for student in found for key in student if isinstance(key, str)]
        stored: dict[str, bytes | None] = {}
        if wanted:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in wanted:
                    pipe.get(key)
                stored = dict(zip(wanted, await self._checked(pipe), strict=True))
        return [
            (values, [stored[key] or b"" if isinstance(key, str) else key for key in student])
            for values, student in zip(accounts, found, strict=True)
        ]

    async def _load_many(
        self, pipe: Any, requests: list[tuple[str, list[Identity], list[int]]]
    ) -> list[Any]:
        """The load script's reads (see load_many.lua), each student's values in request order:
        the students that read the same years are one group."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for at, (_, _, years) in enumerate(requests):
            groups.setdefault(tuple(years), []).append(at)
        keys: list[str] = []
        args: list[Any] = []
        for group_years, members in groups.items():
            fields = [*ACCOUNT_LOAD_FIELDS, *load_fields(group_years)]
            args.extend((len(members), len(fields), *fields))
            keys.extend(account_key(requests[at][0]) for at in members)
        pipe.evalsha(_sha(LOAD_MANY_SCRIPT), len(keys), *keys, *args)
        flat = (await self._checked(pipe))[0]
        accounts: list[Any] = [None] * len(requests)
        start = 0
        for group_years, members in groups.items():
            width = len(ACCOUNT_LOAD_FIELDS) + 2 * len(group_years)
            for at in members:
                accounts[at] = flat[start : start + width]
                start += width
        return accounts

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
            core, fields = encode_state(write)
            args: list[Any] = [
                write.expected_version,
                core,
                self.outbox_retention_ms,
                len(fields),
                index_score(write.held_deadline, remove=write.was_held),
                "1" if write.pending else "",
                write.student_id,
            ]
            for name, value in fields:
                args.extend((name, value))
            for step in write.steps:
                keys.append(outputs_key(write.student_id, step.outputs_name))
                args.extend((step.entry, step.outputs))
            calls.append((keys, args))
        return await self._run_scripts(calls, COMMIT_SCRIPT, COMMIT_MANY_SCRIPT, index=True)

    async def _index_after_commit(self, writes: list[AccountWrite], replies: list[Any]) -> None:
        """A cluster's held index, set after the commits that went through (see the class)."""
        scores: dict[str, float] = {}
        for write, reply in zip(writes, replies, strict=True):
            if not reply or write.pending:
                continue  # the sweeper's own write: its claim keeps the entry due
            if reply == PENDING:
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
        return decode_fields(student_id, fields, with_units=with_units)

    async def due_held(self, now: float, limit: int = 500) -> list[str]:
        members = await self.redis.zrangebyscore(HELD_INDEX_KEY, "-inf", now, start=0, num=limit)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    async def held_count(self) -> int:
        return int(await self.redis.zcard(HELD_INDEX_KEY))

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
            index_score(deadline, remove=False),
            b"".join(bytes.fromhex(digest) for digest in published),
        ]
        keys = [account_key(student_id)]
        try:
            replies = await self._run_scripts(
                [(keys, args)], SETTLE_SCRIPT, SETTLE_MANY_SCRIPT, index=True
            )
        except NoScriptError:
            await self._load_scripts()
            replies = await self._run_scripts(
                [(keys, args)], SETTLE_SCRIPT, SETTLE_MANY_SCRIPT, index=True
            )
        if claim.marker is not None:
            score = "0" if replies[0] else index_score(deadline, remove=False)
            await self.redis.eval(
                RELEASE_CLAIM_SCRIPT, 1, HELD_INDEX_KEY, student_id, claim.marker, score
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
        account = decode_fields(student_id, fields, with_units=True)
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


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


if TYPE_CHECKING:
    _implements: type[AccountStore] = RedisStore
