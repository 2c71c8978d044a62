"""The sweep of held exam results that no input record carries past their deadline (R3.6).

The processor refuses a held result with the next record of its student; a student with no
further record is found here, through the store's held index, and refused as a step of stored
outputs that is published before it is settled.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from learning_account.domain.model import HeldResult
from learning_account.ops.restore import core_snapshot
from learning_account.processing.batch import MAX_CONFLICT_RETRIES
from learning_account.processing.outputs import OutputMessage, decode_stored, encode_stored
from learning_account.processing.store import (
    AccountWrite,
    AppliedStep,
    HeldClaim,
    event_digest,
    next_version,
)

if TYPE_CHECKING:
    from learning_account.processing.pipeline import Processor

log = logging.getLogger(__name__)


async def sweep_held(
    processor: Processor,
    publish: Callable[[list[OutputMessage]], Awaitable[None]],
    limit: int = 500,
    *,
    until: float | None = None,
    partitions: Mapping[int, float] | None = None,
) -> int:
    """Refuse held exam results whose deadline is at or before `until` (R3.6: the input time
    the registrations reached; the clock when not given) with no event to carry them. With
    `partitions`, a result counts the time of its partition number there, and one of a
    partition number not there is left to the instance that owns it.

    Per due student: 1. claim its index entry; 2. load the account; 3. write the refusals
    with it as a step of stored outputs (a compare-and-set on the version: a batch that wrote
    the account meanwhile wins, and the sweep reads and decides again); 4. publish them, and
    any a crashed sweep left stored but unpublished (same ids, same bytes); 5. settle: drop
    them from the pending ones and schedule the next sweep of the student.
    """
    now = processor.clock() if until is None else until
    cutoffs = dict(partitions or {})
    latest = max(cutoffs.values(), default=now) if partitions is not None else now

    def cutoff(held: tuple[HeldResult, ...]) -> float | None:
        times = [now if h.partition is None else cutoffs.get(h.partition) for h in held]
        if partitions is None or not times:  # nothing held: only unpublished refusals
            return now
        return None if None in times else min(t for t in times if t is not None)

    refused = 0
    for student_id in await processor.store.due_held(latest, limit):
        # Step 1.
        claim = await processor.store.claim_held(student_id)
        if claim is not None:
            refused += await _sweep_student(processor, student_id, claim, cutoff, publish)
    return refused


async def _sweep_student(
    processor: Processor,
    student_id: str,
    claim: HeldClaim,
    cutoff: Callable[[tuple[HeldResult, ...]], float | None],
    publish: Callable[[list[OutputMessage]], Awaitable[None]],
) -> int:
    for _attempt in range(MAX_CONFLICT_RETRIES):
        # Step 2.
        loaded = (await processor.store.load({student_id: []}))[student_id]
        if loaded.unreadable is not None:
            log.warning("held results of %s not swept: %s", student_id, loaded.unreadable)
            return 0
        account, expired = processor.expire(loaded.account, cutoff(loaded.account.held))
        messages = [
            message
            for stored in await processor.store.stored_outputs(student_id, loaded.pending)
            if stored
            for message in decode_stored(stored)
        ]
        published = list(loaded.pending)
        version = loaded.version
        if expired:
            # Step 3.
            refusals = [(event_digest(event.caused_by), message) for event, message in expired]
            write = AccountWrite(
                student_id,
                loaded.version,
                account,
                tuple(AppliedStep(digest, encode_stored([m])) for digest, m in refusals),
                held_deadline=processor.held_deadline(account),
                was_held=True,
                pending=True,
            )
            if not (await processor.store.commit([write]))[student_id]:
                continue
            version = next_version(loaded.version)
            messages.extend(message for _, message in refusals)
            published.extend(digest for digest, _ in refusals)
            if processor.snapshots:
                messages.extend(await processor.snapshot_messages([write]))
        # Step 4.
        if messages:
            await publish(messages)
        # Step 5.
        await processor.store.settle_held(
            student_id, version, published, processor.held_deadline(account), claim
        )
        if processor.snapshots and published:
            # the account's core without the pending digests the settle dropped
            stored = await processor.store.raw_accounts([student_id])
            await publish([core_snapshot(student_id, stored[student_id])])
        return len(expired)
    log.warning("held results of %s not swept: the account kept changing", student_id)
    return 0
