"""Each student's learning account in Redis (the keys and fields: `redis_layout`).

Applying a batch is three round trips whatever its size (four when it re-delivers applied
events: their stored outputs are read apart): one pipelined read of every touched student, then
its commit. On a single Redis the commit is a MULTI/EXEC of plain commands per 32 students, each
under a WATCH of its accounts (`RedisStore._commit_chunk`); on a Redis Cluster, one Lua script
per student (`lua/`), as a cluster's accounts lie on many slots. Either way a student's state,
digests and stored outputs are written together or not at all, and only if its version is still
the one loaded. Only the academic years a batch names are read and written, and only the list
of applied events each event's digest falls in (`redis_layout.leaf`), so a student's long
history does not make an event much dearer. A student whose list has split costs one more
round trip the first time this process meets it (`_read_split`), none after.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, ResponseError

from learning_account.adapters.lua import (
    COMMIT_SCRIPT,
    RELEASE_CLAIM_SCRIPT,
    SCRIPTS,
    SETTLE_MANY_SCRIPT,
    SETTLE_SCRIPT,
    SPLIT,
)
from learning_account.adapters.redis_connect import connection, exchange, pack
from learning_account.adapters.redis_layout import (
    ACCOUNT_LOAD_FIELDS,
    CORE_FIELDS,
    HELD_INDEX_KEY,
    account_key,
    appended,
    decode_fields,
    encode_state,
    index_score,
    leaf,
    load_fields,
    loaded,
    outputs_key,
    part_fields,
    restore_marks_key,
    seen_key,
    snapshot_part,
    snapshot_parts,
    split_names,
)
from learning_account.domain.model import Account
from learning_account.processing.store import (
    DIGEST_BYTES,
    AccountWrite,
    HeldClaim,
    Identity,
    LoadedAccount,
    SnapshotParts,
    retention_ms,
    write_refused,
)

if TYPE_CHECKING:
    from learning_account.processing.store import AccountStore

WATCH_CHUNK = 32
"""Students per MULTI/EXEC on a single Redis: a WATCH costs Redis a scan of the keys the
connection watches already, for each key (Redis 7), so its cost grows with the square of the
keys a transaction watches."""

_MULTI, _EXEC, _UNWATCH = pack("MULTI"), pack("EXEC"), pack("UNWATCH")
_KEPT_ACCOUNTS_MAX = 5_000
"""At most this many commits' snapshot parts kept until `snapshot_parts` takes them
(`snapshots`): what no snapshot took (a batch whose publish failed) is dropped past it, and
an account dropped too early is only read again."""
_TYPE_OF_INDEX = pack("TYPE", HELD_INDEX_KEY)
_KNOWN_SPLIT_MAX = 100_000
"""At most this many students remembered with a split `k` (see `_read_split`)."""

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
        snapshots: bool = False,
    ) -> None:
        self.redis = redis
        self.outbox_retention_ms = retention_ms(outbox_retention_seconds)
        self._observe = observe
        self.snapshots = snapshots
        """Keep what each commit leaves of the parts it writes, so `snapshot_parts` answers for
        the students just committed without reading them again (on a single Redis): for a
        store whose commits are snapshotted (the live service's)."""
        self._split: set[str] = set()
        """Students this process found with their `k` split: a load and a commit name their
        deeper lists in their first read (`_read_split`)."""
        self._committed: dict[str, SnapshotParts] = {}
        """Per student, the core and parts its last commit wrote, as it left them
        (`snapshots`), until `snapshot_parts` hands them out."""

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
        """One HMGET per student (each atomic), then the stored outputs of the events seen: a
        digest recorded in the account had its outputs stored in the same commit, and a digest
        once recorded stays, so the second read finds what the first one implies."""
        known = self._split
        deeper = [
            split_names(events) if known and student_id in known else ()
            for student_id, events, _ in requests
        ]
        reads: list[tuple[str | bytes, ...]] = [
            (
                "HMGET",
                account_key(student_id),
                *ACCOUNT_LOAD_FIELDS,
                *load_fields(years),
                *names,
            )
            for (student_id, _, years), names in zip(requests, deeper, strict=True)
        ]
        replies = await self._read(reads)
        accounts: list[Any] = []
        read: list[dict[bytes, bytes | None]] = []
        unread: list[int] = []
        for at, ((student_id, events, years), names, reply) in enumerate(
            zip(requests, deeper, replies, strict=True)
        ):
            end = len(ACCOUNT_LOAD_FIELDS) + 2 * len(years)
            accounts.append(reply[:end])
            lists_read = {b"k": reply[4]}
            if reply[4] != SPLIT:
                if known:
                    known.discard(student_id)  # restored or forgotten since
            elif names:
                lists_read.update(zip(names, reply[end:], strict=True))
            else:
                self._known_split(student_id)
                if events:
                    unread.append(at)
            read.append(lists_read)
        if unread:
            await self._read_split(read, unread, requests)
        lists = [found.__getitem__ for found in read]
        found = [
            [
                seen_key(student_id, values[2] or b"", leaf(event[0], value_of)[1], event)
                for event in events
            ]
            for (student_id, events, _), values, value_of in zip(
                requests, accounts, lists, strict=True
            )
        ]
        wanted = [key for student in found for key in student if isinstance(key, str)]
        stored: dict[str, bytes | None] = {}
        if wanted:
            replies = await self._read([("GET", key) for key in wanted])
            stored = dict(zip(wanted, replies, strict=True))
        return [
            (values, [stored[key] or b"" if isinstance(key, str) else key for key in student])
            for values, student in zip(accounts, found, strict=True)
        ]

    async def _read_split(
        self,
        read: list[dict[bytes, bytes | None]],
        unread: list[int],
        requests: list[tuple[str, list[Identity], list[int]]],
    ) -> None:
        """Add to `read` the deeper lists of the `unread` students' events: students whose `k`
        has split and who were not known to (`_split`), found by the first read. One more
        round trip, once per such student and process. Lists only grow and split, so what this
        reads holds every entry the first read implied."""
        wanted = [split_names(requests[at][1]) for at in unread]
        replies = await self._read(
            [
                ("HMGET", account_key(requests[at][0]), *below)
                for at, below in zip(unread, wanted, strict=True)
            ]
        )
        for at, below, reply in zip(unread, wanted, replies, strict=True):
            read[at].update(zip(below, reply, strict=True))

    def _known_split(self, student_id: str) -> None:
        if len(self._split) >= _KNOWN_SPLIT_MAX:
            self._split.clear()  # each is found again, at one more round trip
        self._split.add(student_id)

    async def _read(self, reads: Sequence[tuple[str | bytes, ...]]) -> list[Any]:
        """Each read's reply, in one round trip (a pipeline on a cluster); an error raises."""
        if self._cluster:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, *args in reads:
                    pipe.execute_command(name, *args)
                return await self._checked(pipe)
        async with connection(self.redis) as conn:
            replies = await self._exchange(conn, [pack(*read) for read in reads])
        return _raised(replies)

    async def _exchange(self, conn: AbstractConnection, commands: list[bytes]) -> list[Any]:
        """`redis_connect.exchange`: a single Redis's commands and replies all pass here."""
        return await exchange(conn, commands)

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
        if self._cluster:
            return await self._eval_each(calls, one)
        async with self.redis.pipeline(transaction=False) as pipe:
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
        if self._cluster:
            try:
                replies = await self._commit_each(writes)
            except NoScriptError:
                # a restarted (or new) node lost the script cache: load it and redo; a write
                # that did go through now fails its version check and is reloaded as seen
                await self._load_scripts()
                replies = await self._commit_each(writes)
            await self._index_after_commit(writes, replies)
        else:
            replies = await self._commit_all(writes)
        self._timed("commit", started)
        return {write.student_id: bool(reply) for write, reply in zip(writes, replies, strict=True)}

    async def _commit_all(self, writes: list[AccountWrite]) -> list[int]:
        """A single Redis: the batch in MULTI/EXEC transactions of up to `WATCH_CHUNK` students
        each, sent together on connections of their own (`_commit_chunk`)."""
        self._check_arguments(writes)
        chunks = [writes[at : at + WATCH_CHUNK] for at in range(0, len(writes), WATCH_CHUNK)]
        if len(chunks) == 1:
            return await self._commit_chunk(writes)
        replies = await asyncio.gather(*(self._commit_chunk(chunk) for chunk in chunks))
        return [reply for chunk in replies for reply in chunk]

    def _check_arguments(self, writes: list[AccountWrite]) -> None:
        """What Redis would refuse inside an EXEC, refused before the first MULTI."""
        for write in writes:
            refused = write_refused(write, self.outbox_retention_ms)
            if refused is not None:
                raise ResponseError(refused)

    async def _commit_chunk(self, writes: list[AccountWrite]) -> list[int]:
        """Students in one MULTI/EXEC, under a WATCH of their accounts.

        First round trip: WATCH every account, then read what the write builds on (the version,
        and the `d`, `k` and `p` lists it appends to) and the held index's type. A student whose
        version moved since its load is left out (0). Second: MULTI, per student one HSET, one
        SET per stored outputs and its held-index entry, EXEC. If any watched account changed in
        between, EXEC writes nothing and every student of the transaction is reloaded (0). Every
        error a write could meet (a key of another type, a version that is not a number, a
        retention or deadline Redis would refuse) is met before MULTI, so EXEC never stops
        halfway; a command Redis refuses to queue (out of memory) aborts it whole. The scripts'
        per-student checks do the same on a cluster (`lua/commit_one.lua`, which this mirrors);
        here no argument passes through Lua.
        """
        keys = [account_key(write.student_id) for write in writes]
        states = [encode_state(write) for write in writes]
        known = self._split
        deeper = [
            _split_lists(write) if known and write.student_id in known else () for write in writes
        ]
        # what a snapshot of the years written needs and the write does not set
        others = [_other_year_fields(fields) if self.snapshots else () for _, fields in states]
        reads = [
            pack("HMGET", key, "v", "d", "p", "k", *names, *other)
            for key, names, other in zip(keys, deeper, others, strict=True)
        ]
        async with connection(self.redis) as conn:
            first = [pack("WATCH", *keys), _TYPE_OF_INDEX, *reads]
            checked = _raised(await self._exchange(conn, first))
            if checked[1] not in (b"zset", b"none"):
                raise ResponseError("commit: the held index is not a sorted set")
            stored_all = checked[2:]
            lists = [{b"k": stored[3]} for stored in stored_all]
            split: dict[int, tuple[bytes, ...]] = {}
            for at, (names, stored) in enumerate(zip(deeper, stored_all, strict=True)):
                if names:
                    lists[at].update(zip(names, stored[4 : 4 + len(names)], strict=True))
                elif stored[3] == SPLIT and (names := _split_lists(writes[at])):
                    split[at] = names
            if split:  # still under the WATCH: a change since the first read aborts the EXEC
                below = [pack("HMGET", keys[at], *names) for at, names in split.items()]
                replies = _raised(await self._exchange(conn, below))
                for (at, names), reply in zip(split.items(), replies, strict=True):
                    lists[at].update(zip(names, reply, strict=True))
                    self._known_split(writes[at].student_id)
            outcomes: list[int] = []
            commands = [_MULTI]
            left: dict[str, SnapshotParts] = {}
            for write, state, stored, found, names, other in zip(
                writes, states, stored_all, lists, deeper, others, strict=True
            ):
                if (stored[0] or b"") != write.expected_version.encode():
                    outcomes.append(0)
                    continue
                outcome, written = self._write_commands(write, state, stored[:3], found, commands)
                outcomes.append(outcome)
                if self.snapshots:
                    year_values = dict(zip(other, stored[4 + len(names) :], strict=True))
                    left[write.student_id] = _parts_left(written, stored[1:3], found, year_values)
            if len(commands) == 1:
                await self._exchange(conn, [_UNWATCH])
                return outcomes
            commands.append(_EXEC)
            executed = (await self._exchange(conn, commands))[-1]
        if executed is None:  # a watched account changed: nothing was written
            return [0] * len(writes)
        _raised([executed] if isinstance(executed, Exception) else executed)
        if left:
            if len(self._committed) > _KEPT_ACCOUNTS_MAX:
                self._committed.clear()  # commits no snapshot followed (a failed publish)
            self._committed.update(left)
        return outcomes

    def _write_commands(
        self,
        write: AccountWrite,
        state: tuple[bytes, list[tuple[str, bytes]]],
        stored: Sequence[bytes | None],
        lists: dict[bytes, bytes | None],
        commands: list[bytes],
    ) -> tuple[int, dict[bytes, bytes]]:
        """Add one student's write to `commands`: 1, or 2 when digests of outputs that may not
        be published yet are pending (the commit script's reply), and the fields it sets.
        `state` is its `encode_state`, `stored` the version and the `d` and `p` lists as
        checked, `lists` the applied-event lists the write's entries go to
        (`redis_layout.appended`)."""
        current, applied, pending = stored
        try:
            version = int(current or 0) + 1
        except ValueError:
            raise ResponseError("commit: the stored version is not a number") from None
        student_id = write.student_id
        core, year_fields = state
        added_d = added_p = b""
        added_k: list[bytes] = []
        for step in write.steps:
            entry = step.entry
            if write.pending:
                added_p += entry
            elif len(entry) == DIGEST_BYTES:
                added_d += entry
            else:
                added_k.append(entry)
            if step.outputs:
                commands.append(
                    pack(
                        "SET",
                        outputs_key(student_id, step.outputs_name),
                        step.outputs,
                        "PX",
                        self.outbox_retention_ms,
                    )
                )
        fields: dict[bytes, bytes] = {b"s": core, b"v": b"%d" % version}
        if added_d:
            fields[b"d"] = (applied or b"") + added_d
        if added_k:
            fields.update(appended(added_k, lists.__getitem__))
            if fields.get(b"k") == SPLIT:
                self._known_split(student_id)
        if added_p:
            fields[b"p"] = (pending or b"") + added_p
        for name, value in year_fields:
            fields[name.encode()] = value
        commands.append(pack("HSET", account_key(student_id), *_flat(fields)))
        waiting = (pending or b"") + added_p
        score = index_score(write.held_deadline, remove=write.was_held)
        if waiting:
            commands.append(pack("ZADD", HELD_INDEX_KEY, 0, student_id))
        elif score == "-":
            commands.append(pack("ZREM", HELD_INDEX_KEY, student_id))
        elif score:
            commands.append(pack("ZADD", HELD_INDEX_KEY, score, student_id))
        return (PENDING if waiting else 1), fields

    async def _commit_each(self, writes: list[AccountWrite]) -> list[Any]:
        """A cluster: one commit script call per student (`lua/commit_one.lua`)."""
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
        return await self._eval_each(calls, COMMIT_SCRIPT)

    async def _eval_each(self, calls: list[tuple[list[str], list[Any]]], script: str) -> list[Any]:
        """A cluster: `script` once per call, pipelined (each to its keys' node)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                # cluster pipelines refuse EVALSHA; EVAL carries the script (cached by sha)
                pipe.eval(script, len(keys), *keys, *args)
            return await self._checked(pipe)

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
        replies = await self._read([("HGETALL", account_key(sid)) for sid in student_ids])
        return dict(zip(student_ids, map(_as_dict, replies), strict=True))

    async def snapshot_parts(self, student_ids: Sequence[str]) -> dict[str, SnapshotParts]:
        """Per student just committed, its core and the parts its commit wrote (`snapshots`,
        a single Redis); the core and every part of the hash as stored for the others (one
        pipelined round trip)."""
        known = {sid: self._committed.pop(sid) for sid in student_ids if sid in self._committed}
        unknown = [sid for sid in student_ids if sid not in known]
        if unknown:
            stored = await self.raw_accounts(unknown)
            known.update((sid, snapshot_parts(stored[sid])) for sid in unknown)
        return {sid: known[sid] for sid in student_ids}

    async def restore_parts(
        self, student_id: str, version: int, parts: Mapping[bytes, Mapping[bytes, bytes]]
    ) -> int:
        """Write the core (part b"") and parts of an account at `version`, each as given (its
        fields present, the rest of `part_fields` removed), unless a later state of it is
        written already; how many were written. Of two cores of one version the one with fewer
        pending digests is the later (a settle only drops `p` entries, at the same version);
        else an equal version is written again (the later record of a key is the later state)."""
        marks = restore_marks_key(student_id)
        names = list(parts)
        written = await self.redis.hmget(marks, names)
        ranks = {part: _restore_rank(part, version, parts[part]) for part in names}
        newer = [
            part
            for part, mark in zip(names, written, strict=True)
            if mark is None or _parsed_rank(mark) <= ranks[part]
        ]
        if newer:
            key = account_key(student_id)
            async with self.redis.pipeline(transaction=False) as pipe:
                for part in newer:
                    fields = parts[part]
                    gone = [name for name in part_fields(part) if name not in fields]
                    if gone:
                        pipe.hdel(key, *gone)
                    if fields:
                        pipe.hset(key, mapping=dict(fields))  # type: ignore[arg-type]
                marked = {part: b"%d:%d" % ranks[part] for part in newer}
                pipe.hset(marks, mapping=marked)  # type: ignore[arg-type]
                await self._checked(pipe)
        return len(newer)

    async def finish_restore(
        self, student_ids: Iterable[str], held_deadline: Callable[[Account], float | None]
    ) -> int:
        """After `restore_parts`: each student's held-index entry, from the account as restored,
        and its restore marks dropped; how many accounts there are."""
        accounts = 0
        for student_id in student_ids:
            await self.redis.delete(restore_marks_key(student_id))
            fields: Any = await self.redis.hgetall(account_key(student_id))
            if b"s" not in fields:
                await self.redis.zrem(HELD_INDEX_KEY, student_id)
                continue
            accounts += 1
            deadline = held_deadline(decode_fields(student_id, fields, with_units=True))
            if fields.get(b"p"):
                await self.redis.zadd(HELD_INDEX_KEY, {student_id: 0})
            elif deadline is not None:
                await self.redis.zadd(HELD_INDEX_KEY, {student_id: deadline})
            else:
                await self.redis.zrem(HELD_INDEX_KEY, student_id)
        return accounts

    async def forget_account(self, student_id: str) -> None:
        await self.redis.delete(account_key(student_id), restore_marks_key(student_id))
        await self.redis.zrem(HELD_INDEX_KEY, student_id)

    async def restore_outputs(
        self, student_id: str, digest: str, outputs: bytes, keep_ms: int
    ) -> None:
        """A step's stored outputs, kept `keep_ms` more milliseconds."""
        await self.redis.set(outputs_key(student_id, digest), outputs, px=keep_ms)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())


def _raised(replies: list[Any]) -> list[Any]:
    """The replies, once none is an error: the first one raises."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _split_lists(write: AccountWrite) -> tuple[bytes, ...]:
    """The fields below `k` a commit reads, where `k` has split, to find the lists its applied
    events go to: every deeper `bucket_names` of their digests (none for the sweeper's steps,
    recorded in `d` or `p`)."""
    if write.pending:
        return ()
    return split_names([(step.digest, step.content) for step in write.steps if step.content])


def _other_year_fields(year_fields: list[tuple[str, bytes]]) -> tuple[bytes, ...]:
    """The year fields a write does not set of the years it sets one of (units or totals)."""
    written = {name.encode() for name, _ in year_fields}
    others = {other for name in written for other in part_fields(snapshot_part(name))}
    return tuple(sorted(others - written))


def _parts_left(
    written: dict[bytes, bytes],
    checked: Sequence[bytes | None],
    lists: Mapping[bytes, bytes | None],
    year_values: Mapping[bytes, bytes | None],
) -> SnapshotParts:
    """The core and the parts a commit wrote, as it leaves them: what it set, over the `d` and
    `p` lists and the applied-event lists as checked (under its WATCH) and the `year_values`
    read of the years it wrote."""
    core = {b"d": checked[0], b"p": checked[1], b"k": lists.get(b"k")}
    present = {name: value for name, value in core.items() if value is not None}
    present.update((name, written[name]) for name in CORE_FIELDS if name in written)
    parts: dict[bytes, dict[bytes, bytes]] = {}
    for name, value in (*year_values.items(), *written.items()):
        if value is not None and name not in _CORE_NAMES:
            parts.setdefault(snapshot_part(name), {})[name] = value
    return present, parts


def _restore_rank(part: bytes, version: int, fields: Mapping[bytes, bytes]) -> tuple[int, int]:
    """Which of two restored states of a part is the later (`restore_parts`)."""
    return version, (0 if part else -len(fields.get(b"p", b"")))


def _parsed_rank(mark: bytes | str) -> tuple[int, int]:
    version, _, pending = (mark.decode() if isinstance(mark, bytes) else mark).partition(":")
    return int(version), int(pending or 0)


_CORE_NAMES = frozenset(CORE_FIELDS)


def _flat(fields: Mapping[bytes, bytes]) -> list[bytes]:
    return [item for pair in fields.items() for item in pair]


def _as_dict(reply: Any) -> dict[bytes, bytes]:
    """An HGETALL reply: a map (RESP3, or a client's response callback) or a flat list."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


if TYPE_CHECKING:
    _implements: type[AccountStore] = RedisStore
