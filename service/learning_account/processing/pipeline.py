"""A batch of input records in, the output messages to publish out; state written in between.

The steps, whatever the batch size: decode every record (and dead-letter a source that
LA_ALLOWED_SOURCES does not list); load every touched student in one Redis round trip; decide in
memory, in record order per student; write each student's new state, applied digests and outputs
atomically, all in one pipelined round trip. An event is known by its idempotency key (the
student, `source`, `id`) and its content (`type` + the validated `data`): a duplicate (the same
key and content, already applied or twice in the batch) re-publishes the stored outputs and
applies nothing; the same key with other content is refused (`id_conflict`), also applying
nothing. A step with an output the broker would refuse is not applied: its record is
dead-lettered instead. The caller publishes the outputs and only then commits the input offsets.
The records and the report are `batch`'s; the held results no record carries, `held_sweep`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace

from opentelemetry.trace import Tracer

from learning_account.domain.events import NOTHING_TOUCHED, Decision, DomainEvent, EventRejected
from learning_account.domain.model import Account, Command, Policy, Refusal, immutable
from learning_account.domain.rules import decide, expire_held_results
from learning_account.observability.tracing import applying
from learning_account.ops.restore import account_snapshots, outbox_snapshots
from learning_account.processing import held_sweep
from learning_account.processing.batch import (
    MAX_CONFLICT_RETRIES,
    BatchReport,
    InputRecord,
    add_tally,
    count_applied,
    source_allowed,
)
from learning_account.processing.commands import to_command
from learning_account.processing.outputs import (
    OutputMessage,
    dead_letter,
    decode_stored,
    encode_stored,
    now_text,
    to_message,
)
from learning_account.processing.store import (
    AccountStore,
    AccountWrite,
    AppliedStep,
    Identity,
    LoadedAccount,
    content_digest,
    event_digest,
)
from learning_account.settings import DEFAULT_MAX_MESSAGE_BYTES
from learning_account.wire import (
    ErrorCode,
    InvalidMessage,
    binding_headers,
    canonical_content,
    decode,
    record_time,
)

__all__ = ["MAX_CONFLICT_RETRIES", "BatchReport", "InputRecord", "Processor"]

log = logging.getLogger(__name__)

RECORD_HEADROOM_BYTES = 1024
"""Of a record's size, what is not its key and value: batch and record framing, headers."""


@immutable
class _Item:
    index: int
    digest: str
    content: str
    identity: Identity
    """(digest, content), as the store knows the event."""
    command: Command
    record: InputRecord


class Processor:
    def __init__(
        self,
        store: AccountStore,
        policy: Policy,
        *,
        clock: Callable[[], float] = time.time,
        tracer: Tracer | None = None,
        consumer_group: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        allowed_sources: Sequence[str] | None = None,
        snapshots: bool = False,
    ) -> None:
        self.store = store
        self.allowed_sources = allowed_sources
        self.snapshots = snapshots
        """Report the committed accounts for the snapshot topics (the live service does)."""
        self.policy = policy
        self.clock = clock
        self.tracer = tracer
        self.consumer_group = consumer_group
        self.max_output_bytes = max_message_bytes - RECORD_HEADROOM_BYTES
        """The largest key plus value of an output record."""

    async def process(self, records: Sequence[InputRecord]) -> BatchReport:
        """Apply the records in the order given (ordering.Merge's, so per student the order of
        the record times); each record at its time, which also times out held results."""
        report = BatchReport()
        outputs: list[list[OutputMessage]] = [[] for _ in records]
        by_student: dict[str, list[_Item]] = {}
        identities: dict[str, list[Identity]] = {}
        years: dict[str, set[int]] = {}
        for index, record in enumerate(records):
            try:
                decoded = decode(
                    record.topic,
                    record.value,
                    record.key,
                    record.headers,
                    stamped_at=record_time(record.timestamp_ms),
                )
                command = to_command(decoded)
            except InvalidMessage as error:
                outputs[index] = [self._dead_letter(record, error.reason, error.code)]
                report.dead_lettered += 1
                continue
            if not source_allowed(decoded.source, self.allowed_sources):
                foreign = f"source {decoded.source!r} is not one of LA_ALLOWED_SOURCES"
                code = ErrorCode.SOURCE_NOT_ALLOWED
                outputs[index] = [self._dead_letter(record, foreign, code)]
                report.dead_lettered += 1
                continue
            digest = event_digest(command.event)
            content = content_digest(canonical_content(decoded))
            item = _Item(index, digest, content, (digest, content), command, record)
            student_id = command.student_id
            items = by_student.get(student_id)
            if items is None:
                by_student[student_id] = [item]
                identities[student_id] = [item.identity]
                years[student_id] = {command.academic_year}
            else:
                items.append(item)
                identities[student_id].append(item.identity)
                years[student_id].add(command.academic_year)

        pending = dict(by_student)
        written: list[AccountWrite] = []
        for attempt in range(MAX_CONFLICT_RETRIES):
            if not pending:
                break
            if attempt:  # only the students whose version moved
                identities = {sid: identities[sid] for sid in pending}
                years = {sid: years[sid] for sid in pending}
            loaded = await self.store.load(identities, years)
            writes: list[AccountWrite] = []
            decided: dict[str, list[tuple[int, list[OutputMessage]]]] = {}
            tallies: dict[str, BatchReport] = {}
            for student_id, items in pending.items():
                tally = BatchReport()
                write, produced = self._decide_student(student_id, items, loaded[student_id], tally)
                decided[student_id] = produced
                tallies[student_id] = tally
                if write is not None:
                    writes.append(write)
            committed = await self.store.commit(writes)
            by_student_write = {write.student_id: write for write in writes}
            retry: dict[str, list[_Item]] = {}
            for student_id, items in pending.items():
                if committed.get(student_id, True):
                    if student_id in by_student_write:
                        written.append(by_student_write[student_id])
                    for index, messages in decided[student_id]:
                        outputs[index] = messages
                    add_tally(report, tallies[student_id])
                else:
                    retry[student_id] = items
                    report.conflicts += 1
            pending = retry
        if pending:
            raise RuntimeError(f"{len(pending)} students kept changing under this batch")
        report.outputs = [message for messages in outputs for message in messages]
        if self.snapshots and written:
            report.snapshots = await self.snapshot_messages(written)
        return report

    async def snapshot_messages(self, writes: Sequence[AccountWrite]) -> list[OutputMessage]:
        """Per committed write: its steps' stored outputs, then what it wrote of the account."""
        stored = await self.store.snapshot_parts([write.student_id for write in writes])
        expires_ms = int(time.time() * 1000) + self.store.outbox_retention_ms
        messages: list[OutputMessage] = []
        for write in writes:
            for step in write.steps:
                if step.outputs:
                    messages.extend(
                        outbox_snapshots(write.student_id, step.digest, step.outputs, expires_ms)
                    )
            messages.extend(account_snapshots(write.student_id, *stored[write.student_id]))
        most = self.max_output_bytes  # the bound of `oversized`
        fitting = [m for m in messages if len(m.key or b"") + len(m.value) <= most]
        if len(fitting) < len(messages):
            # a snapshot never stops the consumer: restore then gives an earlier version
            log.warning(
                "%d snapshot records too large for the broker", len(messages) - len(fitting)
            )
        return fitting

    def _decide_student(
        self,
        student_id: str,
        items: list[_Item],
        loaded: LoadedAccount,
        tally: BatchReport,
    ) -> tuple[AccountWrite | None, list[tuple[int, list[OutputMessage]]]]:
        account = loaded.account
        touched = NOTHING_TOUCHED
        produced: list[tuple[int, list[OutputMessage]]] = []
        steps: list[AppliedStep] = []
        in_batch: dict[Identity, list[OutputMessage]] = {}
        standing: dict[str, str] = {}
        """The content of each digest this batch applies first."""
        for item in items:
            identity = item.identity
            if identity in loaded.seen:
                stored = loaded.seen[identity]
                produced.append((item.index, decode_stored(stored) if stored else []))
                tally.duplicates += 1
                continue
            if identity in in_batch:
                produced.append((item.index, in_batch[identity]))
                tally.duplicates += 1
                continue
            if loaded.unreadable is not None:
                # nothing is written: the record is decided once the account is repaired
                error = f"internal error: the stored account cannot be read ({loaded.unreadable})"
                produced.append((item.index, [self._dead_letter(item.record, error)]))
                tally.dead_lettered += 1
                continue
            stamped = record_time(item.record.timestamp_ms)
            now = stamped if stamped is not None else self.clock()
            stamp = now_text(round(now * 1000))
            if identity in loaded.reused or standing.get(item.digest, item.content) != item.content:
                # the first event with this key stands; the refusal is kept for a re-delivery
                messages = [self._reuse_refused(student_id, item, stamp)]
                steps.append(
                    AppliedStep(item.digest, encode_stored(messages), item.content, reuse=True)
                )
                in_batch[identity] = messages
                produced.append((item.index, messages))
                reason = str(Refusal.ID_CONFLICT)
                tally.rejected[reason] = tally.rejected.get(reason, 0) + 1
                continue
            event = item.command.event
            try:
                if self.tracer is None:
                    decision, messages = self._apply(account, item, now, stamp, None)
                else:
                    with applying(
                        self.tracer,
                        item.record.value,
                        headers=item.record.headers,
                        event_type=event.type,
                        event_id=event.id,
                        source=event.source,
                        topic=item.record.topic,
                        partition=item.record.partition,
                        offset=item.record.offset,
                        key=item.record.key,
                        consumer_group=self.consumer_group,
                    ) as traceparent:
                        decision, messages = self._apply(account, item, now, stamp, traceparent)
            except Exception as error:  # a bug must not stop the consumer: park the record
                log.exception("rules failed on %s/%s", event.source, event.id)
                produced.append(
                    (item.index, [self._dead_letter(item.record, f"internal error: {error!r}")])
                )
                tally.dead_lettered += 1
                continue
            oversized = self.oversized(messages)
            if oversized is not None:
                # the account stays as it was; the digest keeps the verdict for a re-delivery
                log.warning("outputs too large for the broker on %s/%s", event.source, event.id)
                messages = [self._dead_letter(item.record, oversized)]
                steps.append(AppliedStep(item.digest, encode_stored(messages), item.content))
                standing[item.digest] = item.content
                in_batch[identity] = messages
                produced.append((item.index, messages))
                tally.dead_lettered += 1
                continue
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "event applied",
                    extra={
                        "event_source": event.source,
                        "event_id": event.id,
                        "event_type": event.type,
                        "outputs": [message.event_id for message in messages],
                    },
                )
            count_applied(tally, item.command, decision)
            tally.held += len(decision.account.held) > len(account.held)
            account = decision.account
            touched |= decision.touched
            steps.append(AppliedStep(item.digest, encode_stored(messages), item.content))
            standing[item.digest] = item.content
            in_batch[identity] = messages
            produced.append((item.index, messages))
        if not steps:
            return None, produced
        write = AccountWrite(
            student_id=student_id,
            expected_version=loaded.version,
            account=account,
            steps=tuple(steps),
            held_deadline=self.held_deadline(account),
            was_held=bool(loaded.account.held),
            touched=touched,
            read=loaded.account,
        )
        return write, produced

    def oversized(self, messages: Sequence[OutputMessage]) -> str | None:
        """Why the broker would refuse one of a step's outputs, None if it takes them all.

        `learning-account rebuild` applies the same bound, so it skips what live dead-lettered.
        """
        for message in messages:
            size = len(message.key or b"") + len(message.value)
            if size > self.max_output_bytes:
                return (
                    f"internal error: its {message.event_type} output would be {size} bytes,"
                    f" more than the {self.max_output_bytes} an output record may have"
                )
        return None

    def _apply(
        self, account: Account, item: _Item, now: float, stamp: str, traceparent: str | None
    ) -> tuple[Decision, list[OutputMessage]]:
        account, expired = self.expire(account, now)
        decision = decide(account, item.command, now=now, policy=self.policy)
        if len(decision.account.held) > len(account.held):  # held here: on this partition
            held = tuple(
                h if h in account.held else replace(h, partition=item.record.partition)
                for h in decision.account.held
            )
            decision = replace(decision, account=replace(decision.account, held=held))
        messages = [to_message(out, stamp, traceparent) for out in decision.events]
        return decision, [message for _, message in expired] + messages

    def expire(
        self, account: Account, until: float | None
    ) -> tuple[Account, list[tuple[DomainEvent, OutputMessage]]]:
        """Refuse the held results whose deadline is at or before `until` (R3.6), each stamped
        with its deadline, so the refusal reads the same whichever record or sweep decides it."""
        if until is None or not account.held:
            return account, []
        hold = self.policy.result_hold_seconds
        refusals: list[tuple[DomainEvent, OutputMessage]] = []
        for deadline in sorted(
            {h.held_at + hold for h in account.held if h.held_at + hold <= until}
        ):
            decision = expire_held_results(account, now=deadline, policy=self.policy)
            account = decision.account
            stamp = now_text(round(deadline * 1000))
            refusals.extend((event, to_message(event, stamp)) for event in decision.events)
        return account, refusals

    def _reuse_refused(self, student_id: str, item: _Item, stamp: str) -> OutputMessage:
        """The refusal of an event whose key an applied event with other content has; its id
        derives from this content too, so each re-use is refused under an id of its own."""
        event = item.command.event
        detail = (
            f"source {event.source!r} and id {event.id!r} already name another event of this"
            " student (other type or data): the first one stands"
        )
        refusal = EventRejected(student_id, Refusal.ID_CONFLICT, detail, event)
        return to_message(refusal, stamp, id_parts=(item.content,))

    def held_deadline(self, account: Account) -> float | None:
        if not account.held:
            return None
        return min(held.held_at for held in account.held) + self.policy.result_hold_seconds

    def _dead_letter(
        self, record: InputRecord, error: str, code: str = ErrorCode.INTERNAL_ERROR
    ) -> OutputMessage:
        stamp = now_text(record.timestamp_ms)
        return dead_letter(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            error,
            stamp,
            code,
            binding_headers(record.headers),
        )

    async def sweep_held(
        self,
        publish: Callable[[list[OutputMessage]], Awaitable[None]],
        limit: int = 500,
        *,
        until: float | None = None,
        partitions: Mapping[int, float] | None = None,
    ) -> int:
        """Refuse the held results due at `until` that no record carries (`held_sweep`)."""
        return await held_sweep.sweep_held(self, publish, limit, until=until, partitions=partitions)
