"""`learning-account redrive`: re-publish dead-lettered input messages after a fix.

Reads the dead-letter topic from the beginning of every partition up to its end as it was when
the run started, keeps the dead letters that match every filter given (original topic, error
code, a text in the error, record key, dead-lettered at or after a time), and re-publishes each
one's original payload (``data.payload``, base64-decoded when ``payload_encoding`` is
``base64``) to its original topic (``data.topic``) with its original key (``data.key``) and, for
a message in CloudEvents binary mode, its original ``ce_`` headers (``data.headers``).

No consumer group. A group's committed offset is one mark per partition, but a redrive is
selective: committing after ``--topic X`` would silently pass over the dead letters of the other
topics for every later run, and an operator could no longer redrive them after their own fix.
Re-running a redrive is safe instead: the service keys idempotency on CloudEvents ``source`` +
``id``, so an event that was already applied is absorbed as a duplicate (and re-publishes its
stored outputs with the same ids, which downstream deduplicates). A message that still fails is
dead-lettered again, at a new offset; ``--since`` (the time of the dead letter) scopes a run to the
dead letters of one incident. Within one run the same (topic, key, payload) is re-published once.

Skipped (with a warning, counted in the report): truncated payloads (``payload_truncated`` or a
payload of 64 KiB or more: the original was cut), empty payloads, payloads that do not decode,
and dead letters whose original topic is not an input topic (never write to output topics).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from learning_account.ops.dead_letters import (
    dead_letter_time,
    original_headers,
    original_key,
    original_payload,
    utc_time,
)
from learning_account.settings import Settings
from learning_account.wire import DEAD_LETTER_TOPIC, INPUT_TOPICS, ErrorCode

if TYPE_CHECKING:
    from learning_account.bootstrap import KafkaClients

log = logging.getLogger("learning_account.redrive")

ProgressCallback = Callable[[int, int | None], Any]
"""Called with (dead letters read so far, total to read or None while unknown)."""

_IDLE_LIMIT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Redriven:
    """One matched dead letter and what the redrive did with it."""

    partition: int
    offset: int
    topic: str | None
    key: str | None
    error: str
    action: str  # "republished", "would_republish", "duplicate" or "skipped"
    reason: str = ""


@dataclass
class RedriveReport:
    scanned: int = 0
    matched: int = 0
    republished: int = 0
    skipped: int = 0
    duplicates: int = 0
    dry_run: bool = False
    items: list[Redriven] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "matched": self.matched,
            "republished": self.republished,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "dry_run": self.dry_run,
        }


class RedriveError(ValueError):
    """An argument of the redrive is invalid."""


def parse_since(text: str) -> datetime:
    """An ISO 8601 date or time; without an offset it is UTC."""
    try:
        return utc_time(text.strip())
    except ValueError:
        raise RedriveError(f"--since {text!r} is not an ISO 8601 date or time") from None


async def redrive(
    settings: Settings | str,
    *,
    topic: str | Collection[str] | None = None,
    error_code: str | Collection[str] | None = None,
    error_contains: str | None = None,
    key: str | None = None,
    since: datetime | str | None = None,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    dead_letter_topic: str = DEAD_LETTER_TOPIC,
    input_topics: Collection[str] = INPUT_TOPICS,
    kafka: KafkaClients | None = None,
) -> RedriveReport:
    """Re-publish the original payloads of the matching dead letters; see the module docstring.

    ``settings`` give the Kafka clients (a bootstrap address alone: a broker without security).
    ``topic`` (one or several original topics), ``error_code`` (one or several codes of
    ``data.error_code``), ``error_contains`` (case-insensitive substring of ``data.error``),
    ``key`` (``data.key``) and ``since`` (dead-lettered at or after) must all match.
    ``kafka``: the client classes (`bootstrap.KafkaClients`), confluent-kafka's by default.
    """
    from learning_account.adapters.clients import deliver
    from learning_account.bootstrap import kafka_consumer, kafka_producer
    from learning_account.ops.reading import READER_CONFIG, close, partitions_of, read_to_end

    if isinstance(settings, str):
        settings = Settings(kafka_bootstrap_servers=settings)

    topics = {topic} if isinstance(topic, str) else set(topic) if topic is not None else None
    codes = {error_code} if isinstance(error_code, str) else set(error_code) if error_code else None
    since_at = parse_since(since) if isinstance(since, str) else since
    if since_at is not None and since_at.tzinfo is None:
        since_at = since_at.replace(tzinfo=UTC)
    needle = error_contains.lower() if error_contains else None
    report = RedriveReport(dry_run=dry_run)
    seen_payloads: set[tuple[str, bytes | None, bytes, tuple[tuple[str, bytes], ...]]] = set()

    consumer = kafka_consumer(settings, kafka=kafka, config=READER_CONFIG)
    producer = None if dry_run else kafka_producer(settings, kafka=kafka)
    loop = asyncio.get_running_loop()
    try:
        partitions = await partitions_of(consumer, [dead_letter_topic])
        if not partitions:
            log.warning("topic %s does not exist or has no partitions", dead_letter_topic)
            return report
        total = 0
        for tp in partitions:  # an estimate, for the progress bar
            low, high = await loop.run_in_executor(
                None, partial(consumer.get_watermark_offsets, tp, timeout=10)
            )
            total += max(0, high - low)
        # Each partition is read to where its first fetch found its end (`ops.reading`): the
        # dead letters of messages this run re-publishes are left out.
        async for records in read_to_end(
            consumer, partitions, chunk=1000, idle_seconds=_IDLE_LIMIT_SECONDS
        ):
            selected = []
            for message in records:
                report.scanned += 1
                item = _select(
                    DeadLetterRecord.of(message),
                    topics,
                    codes,
                    needle,
                    key,
                    since_at,
                    input_topics,
                    report,
                    seen_payloads,
                )
                if item is not None:
                    selected.append(item)
            if producer is not None and selected:
                await deliver(producer, selected)  # acknowledged chunk by chunk
            if progress is not None:
                progress(report.scanned, max(total, report.scanned))
    finally:
        await close(consumer)
        if producer is not None:
            await loop.run_in_executor(None, producer.flush, 10.0)
    return report


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """What `_select` reads of a fetched dead letter."""

    partition: int
    offset: int
    value: bytes | None
    timestamp: int | None

    @classmethod
    def of(cls, message: Any) -> DeadLetterRecord:
        kind, stamp = message.timestamp()
        return cls(message.partition(), message.offset(), message.value(), stamp if kind else None)


def _select(
    record: DeadLetterRecord,
    topics: set[str] | None,
    codes: set[str] | None,
    needle: str | None,
    key: str | None,
    since_at: datetime | None,
    input_topics: Collection[str],
    report: RedriveReport,
    seen: set[tuple[str, bytes | None, bytes, tuple[tuple[str, bytes], ...]]],
) -> tuple[str, bytes | None, bytes, list[tuple[str, bytes]]] | None:
    """Filter one dead-letter record; count it; what to re-publish when it is selected."""
    try:
        document = json.loads(record.value or b"")
        data = document["data"]
        if not isinstance(data, dict):
            raise TypeError("data is not an object")
    except (TypeError, ValueError, KeyError):
        log.warning(
            "dead letter %d/%d is not a dead-lettered event", record.partition, record.offset
        )
        return None
    target = data.get("topic")
    error = str(data.get("error", ""))
    if topics is not None and target not in topics:
        return None
    if codes is not None and data.get("error_code") not in codes:
        return None
    if needle is not None and needle not in error.lower():
        return None
    if key is not None and data.get("key") != key:
        return None
    if since_at is not None:
        moment = dead_letter_time(document, record.timestamp)
        if moment is None or moment < since_at:
            return None
    report.matched += 1

    def note(action: str, reason: str = "") -> None:
        report.items.append(
            Redriven(
                record.partition,
                record.offset,
                target if isinstance(target, str) else None,
                data.get("key") if isinstance(data.get("key"), str) else None,
                error,
                action,
                reason,
            )
        )

    payload, why = original_payload(data)
    if not isinstance(target, str) or target not in input_topics:
        payload, why = None, f"original topic {target!r} is not an input topic"
    if payload is None or not isinstance(target, str):
        log.warning("skipping dead letter %d/%d: %s", record.partition, record.offset, why)
        report.skipped += 1
        note("skipped", why)
        return None
    record_key = original_key(document)
    headers = original_headers(data)
    identity = (target, record_key, payload, tuple(headers))
    if identity in seen:
        report.duplicates += 1
        note("duplicate", "same topic, key, payload and headers as an earlier dead letter")
        return None
    seen.add(identity)
    if report.dry_run:
        note("would_republish")
    else:
        report.republished += 1
        note("republished")
    return target, record_key, payload, headers


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``learning-account redrive``."""
    parser.add_argument(
        "--topic",
        action="append",
        help="only dead letters of this original topic (repeatable)",
    )
    parser.add_argument(
        "--error-code",
        action="append",
        choices=[str(code) for code in ErrorCode],
        metavar="CODE",
        help="only dead letters with this error_code (repeatable): %(choices)s",
    )
    parser.add_argument("--error-contains", help="only dead letters whose error contains this text")
    parser.add_argument("--key", help="only dead letters with this record key (student id)")
    parser.add_argument(
        "--since", help="only dead letters written at or after this ISO time (UTC if no offset)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be re-published, publish nothing"
    )
    parser.add_argument(
        "--dead-letter-topic", default=DEAD_LETTER_TOPIC, help="the dead-letter topic to read"
    )


async def redrive_command(
    settings: Settings, args: argparse.Namespace, kafka: KafkaClients | None = None
) -> int:
    """Run a redrive with a rich progress bar; print each dead letter's fate and the summary."""
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    try:
        since = parse_since(args.since) if args.since else None
    except RedriveError as error:
        print(f"learning-account redrive: {error}", file=sys.stderr)
        return 2
    console = Console(stderr=True)
    with Progress(
        TextColumn("reading dead letters"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("redrive", total=None)
        report = await redrive(
            settings,
            topic=args.topic,
            error_code=args.error_code,
            error_contains=args.error_contains,
            key=args.key,
            since=since,
            dry_run=args.dry_run,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            dead_letter_topic=args.dead_letter_topic,
            kafka=kafka,
        )
    for item in report.items:
        line = f"{item.action:16} {item.partition}/{item.offset} {item.topic} key={item.key}"
        print(f"{line}  {item.reason or item.error}")
    print(json.dumps(report.summary()))
    return 0
