"""What the processing needs of a store of accounts: the interface and the data it speaks in.

An event is known within its student's account by its idempotency digest (CloudEvents `source`
+ `id`, 8 bytes) and its content digest (`type` + the validated `data`, 4 bytes). A store
- loads each touched student: the account (only the academic years asked for), its version,
  and per event whether it was applied (with the outputs it published), whether its digest
  stands for other content (a re-use), or neither;
- commits each student atomically: the new state, the steps' digests and their outputs, only if
  the version is still the one loaded (else nothing is written and the caller loads again);
- keeps a step's outputs for the outbox retention, so a re-delivery re-publishes them as they
  were;
- keeps an index of the students with held exam results by earliest deadline (0 while a
  sweeper's outputs wait for publication), which the sweeper claims and settles.

`adapters.redis_store.RedisStore` keeps them in Redis; `learning_account_dev.memory_store`
keeps them in memory, for tests.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from learning_account.domain.events import NOTHING_TOUCHED, Touched
from learning_account.domain.model import Account, EventRef, immutable

# The idempotency digest is compared with every event of the account: at 8 bytes two distinct
# events of a 500-event account collide with odds near n²/2^65 (1 in 10^14). The content digest
# is compared only when a digest was already used, so a re-use is missed only when its content
# also matches in 4 bytes (1 in 4·10^9 per re-use); deliberately matching a content not yet sent
# takes a producer that may write the topic at all, which Kafka ACLs and LA_ALLOWED_SOURCES stop.
DIGEST_BYTES = 8
CONTENT_DIGEST_BYTES = 4

Identity = tuple[str, str]
"""An event as the store knows it: its idempotency digest and its content digest (hex)."""

SnapshotParts = tuple[dict[bytes, bytes], dict[bytes, dict[bytes, bytes]]]
"""An account hash's core and some of its parts, each with the fields it has present (how a
store lays them out names the parts: `redis_layout.snapshot_parts`)."""


def event_digest(event: EventRef) -> str:
    """The idempotency key within a student's account: CloudEvents `source` + `id`, hashed to 8
    bytes (16 hex digits)."""
    raw = f"{len(event.source)}:{event.source}{event.id}".encode()
    return hashlib.blake2b(raw, digest_size=DIGEST_BYTES).hexdigest()


def content_digest(canonical: bytes) -> str:
    """An event's content (`wire.canonical_content`) hashed to 4 bytes (8 hex digits)."""
    return hashlib.blake2b(canonical, digest_size=CONTENT_DIGEST_BYTES).hexdigest()


def next_version(version: str) -> str:
    """The version a successful commit on `version` writes: versions count commits, from 1."""
    return str(int(version or 0) + 1)


def retention_ms(seconds: float) -> int:
    """The outbox retention in whole milliseconds; under 1 ms (or not finite) is refused."""
    if not seconds >= 0.001 or math.isinf(seconds):
        raise ValueError(f"the outbox retention must be at least 1 ms, not {seconds!r} s")
    return int(seconds * 1000)


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


def write_refused(write: AccountWrite, retention_ms: object) -> str | None:
    """Why a store refuses `write` before it writes anything (what Redis would refuse halfway
    through a script or an EXEC), None when nothing: an outbox retention that is not a whole
    number of milliseconds from 1, a held deadline that is not a number, a digest of the wrong
    size (a pending step's digest alone, else a digest with or without its content digest)."""
    if not isinstance(retention_ms, int) or isinstance(retention_ms, bool) or retention_ms < 1:
        return "commit: the outbox retention must be a whole number of milliseconds, at least 1"
    if write.held_deadline is not None and math.isnan(write.held_deadline):
        return "commit: the held index score is not a number"
    for step in write.steps:
        digits = len(step.digest) + len(step.content or "")  # hex: the entry's bytes, doubled
        size = digits // 2 if digits % 2 == 0 else -1
        if write.pending and size != DIGEST_BYTES:
            return f"commit: a pending digest is not {DIGEST_BYTES} bytes"
        if size not in (DIGEST_BYTES, DIGEST_BYTES + CONTENT_DIGEST_BYTES):
            return (
                f"commit: a digest is not {DIGEST_BYTES} or"
                f" {DIGEST_BYTES + CONTENT_DIGEST_BYTES} bytes"
            )
    return None


@immutable
class HeldClaim:
    """A sweeper's hold on a student's held-index entry (a Redis Cluster only: `marker` is the
    due score it set, released by `settle_held` unless a writer re-scored the entry since)."""

    marker: int | None


class AccountStore(Protocol):
    """The accounts, their applied events and stored outputs, and the held index."""

    outbox_retention_ms: int
    """How long a step's outputs are kept (and a duplicate re-publishes them)."""

    async def load(
        self,
        events_by_student: Mapping[str, Sequence[Identity]],
        years_by_student: Mapping[str, Iterable[int]] | None = None,
    ) -> dict[str, LoadedAccount]:
        """Every touched student, with the course units of the given academic years only."""
        ...

    async def commit(self, writes: Iterable[AccountWrite]) -> dict[str, bool]:
        """Write each student atomically; False for a student whose version moved meanwhile."""
        ...

    async def get(self, student_id: str, *, with_units: bool = False) -> Account | None:
        """The account for reading (no course units unless asked), None if never written."""
        ...

    async def raw_accounts(self, student_ids: Sequence[str]) -> dict[str, dict[bytes, bytes]]:
        """Each student's account as stored, field by field (for the account snapshots)."""
        ...

    async def snapshot_parts(self, student_ids: Sequence[str]) -> dict[str, SnapshotParts]:
        """Per student just committed, the core and the parts of its account hash its commit
        wrote, as it left them (at least those: every part of the hash as stored will do)."""
        ...

    async def stored_outputs(self, student_id: str, digests: Sequence[str]) -> list[bytes | None]:
        """The outputs stored for these steps (None once the retention passed)."""
        ...

    async def due_held(self, now: float, limit: int = 500) -> list[str]:
        """Students of the held index due at `now`, earliest first."""
        ...

    async def held_count(self) -> int:
        """How many students the held index lists (due or not)."""
        ...

    async def claim_held(self, student_id: str) -> HeldClaim | None:
        """Hold a due index entry while sweeping it; None if it is gone (swept meanwhile)."""
        ...

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
        ...

    async def ping(self) -> bool: ...
