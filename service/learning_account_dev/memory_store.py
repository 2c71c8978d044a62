"""An account store in memory, for tests: the semantics of the Redis store without a Redis.

It keeps what the Redis store keeps, field for field (`adapters.redis_layout`): the account hash
with its version, applied digests (`k`, `d`) and pending sweeper digests (`p`), each step's
outputs until the outbox retention passes, and the held index. A commit checks every write
before it writes any, and writes a student only when its version is the one loaded; the held
index is written with the account, as on a single Redis. `tests/integration/test_store_contract.py`
runs the same behaviour against both stores.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from learning_account.adapters.redis_layout import (
    ACCOUNT_LOAD_FIELDS,
    appended,
    decode_fields,
    digests,
    encode_state,
    index_score,
    leaf,
    load_fields,
    loaded,
    outputs_key,
    seen_key,
    snapshot_parts,
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


class MemoryStore:
    """`accounts` (by student id, each its hash), `outputs` (by outputs key, each its value and
    the `clock` time it expires) and `held` (student id to score) are open to tests, e.g. to
    corrupt a stored state."""

    def __init__(
        self,
        *,
        outbox_retention_seconds: float = 7 * 24 * 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outbox_retention_ms = retention_ms(outbox_retention_seconds)
        self.clock = clock
        self.accounts: dict[str, dict[bytes, bytes]] = {}
        self.outputs: dict[str, tuple[bytes, float]] = {}
        self.held: dict[str, float] = {}

    async def load(
        self,
        events_by_student: Mapping[str, Sequence[Identity]],
        years_by_student: Mapping[str, Iterable[int]] | None = None,
    ) -> dict[str, LoadedAccount]:
        result: dict[str, LoadedAccount] = {}
        for student_id, events in events_by_student.items():
            years = sorted(set((years_by_student or {}).get(student_id, ())))
            fields = self.accounts.get(student_id, {})
            names = [*ACCOUNT_LOAD_FIELDS, *load_fields(years)]
            values = [fields.get(name.encode()) for name in names]
            outcomes = [self._outcome(student_id, fields, identity) for identity in events]
            result[student_id] = loaded(student_id, list(events), years, values, outcomes)
        return result

    def _outcome(self, student_id: str, fields: Mapping[bytes, bytes], event: Identity) -> Any:
        """0 (new), 1 (its digest stands for other content) or its stored outputs (b"" once
        the retention passed), as the Redis store answers."""
        entries = leaf(event[0], fields.get)[1]
        found = seen_key(student_id, fields.get(b"d", b""), entries, event)
        return self._stored(found) or b"" if isinstance(found, str) else found

    def _stored(self, key: str) -> bytes | None:
        value = self.outputs.get(key)
        if value is None:
            return None
        if value[1] <= self.clock():
            del self.outputs[key]
            return None
        return value[0]

    async def commit(self, writes: Iterable[AccountWrite]) -> dict[str, bool]:
        writes = list(writes)
        for write in writes:  # everything a write could fail on, before the first write
            _check(write, self.outbox_retention_ms, self.accounts.get(write.student_id, {}))
        return {write.student_id: self._commit_one(write) for write in writes}

    def _commit_one(self, write: AccountWrite) -> bool:
        fields = self.accounts.get(write.student_id, {})
        current = fields.get(b"v", b"").decode()
        if current != write.expected_version:
            return False
        self.accounts[write.student_id] = fields
        core, year_fields = encode_state(write)
        fields[b"s"] = core
        fields[b"v"] = str(int(current or 0) + 1).encode()
        for name, value in year_fields:
            fields[name.encode()] = value
        expires = self.clock() + self.outbox_retention_ms / 1000
        added: dict[bytes, list[bytes]] = {b"d": [], b"k": [], b"p": []}
        for step in write.steps:
            entry = step.entry
            list_name = b"p" if write.pending else (b"d" if len(entry) == DIGEST_BYTES else b"k")
            added[list_name].append(entry)
            if step.outputs:
                self.outputs[outputs_key(write.student_id, step.outputs_name)] = (
                    step.outputs,
                    expires,
                )
        fields.update(appended(added.pop(b"k"), fields.get))
        for list_name, entries in added.items():
            if entries:
                fields[list_name] = fields.get(list_name, b"") + b"".join(entries)
        score = index_score(write.held_deadline, remove=write.was_held)
        if fields.get(b"p"):
            self.held[write.student_id] = 0
        elif score == "-":
            self.held.pop(write.student_id, None)
        elif score:
            self.held[write.student_id] = float(score)
        return True

    async def get(self, student_id: str, *, with_units: bool = False) -> Account | None:
        fields = self.accounts.get(student_id, {})
        if b"s" not in fields:
            return None
        return decode_fields(student_id, fields, with_units=with_units)

    async def raw_accounts(self, student_ids: Sequence[str]) -> dict[str, dict[bytes, bytes]]:
        return {student_id: dict(self.accounts.get(student_id, {})) for student_id in student_ids}

    async def snapshot_parts(self, student_ids: Sequence[str]) -> dict[str, SnapshotParts]:
        """The core and every part of each account (more than its commit wrote)."""
        stored = await self.raw_accounts(student_ids)
        return {student_id: snapshot_parts(stored[student_id]) for student_id in student_ids}

    async def stored_outputs(self, student_id: str, digests: Sequence[str]) -> list[bytes | None]:
        return [self._stored(outputs_key(student_id, digest)) for digest in digests]

    async def due_held(self, now: float, limit: int = 500) -> list[str]:
        due = sorted((score, student) for student, score in self.held.items() if score <= now)
        return [student for _, student in due[:limit]]

    async def held_count(self) -> int:
        return len(self.held)

    async def claim_held(self, student_id: str) -> HeldClaim | None:
        return HeldClaim(None)  # the index is written with the account, as on a single Redis

    async def settle_held(
        self,
        student_id: str,
        version: str,
        published: Sequence[str],
        deadline: float | None,
        claim: HeldClaim,
    ) -> None:
        fields = self.accounts.get(student_id, {})
        pending = digests(fields.get(b"p", b""))
        if pending and published:
            kept = [digest for digest in pending if digest not in published]
            if kept:
                fields[b"p"] = bytes.fromhex("".join(kept))
            else:
                del fields[b"p"]
            pending = tuple(kept)
        # a write since then set the index itself, from the state it wrote
        if fields.get(b"v", b"").decode() == version:
            if pending:
                self.held[student_id] = 0
            elif deadline is not None:
                self.held[student_id] = deadline
            else:
                self.held.pop(student_id, None)

    async def ping(self) -> bool:
        return True


def _check(write: AccountWrite, retention_ms: int, fields: Mapping[bytes, bytes]) -> None:
    """Why the Redis store would refuse the write, raised as a ValueError."""
    refused = write_refused(write, retention_ms)
    if refused is not None:
        raise ValueError(refused)
    version = fields.get(b"v")
    if version is not None and not _is_number(version):
        raise ValueError("commit: the stored version is not a number")


def _is_number(text: bytes) -> bool:
    try:
        return not math.isnan(float(text))
    except ValueError:
        return False


if TYPE_CHECKING:
    _implements: type[AccountStore] = MemoryStore
