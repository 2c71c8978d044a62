"""What a batch is made of and what its processing reports: the input records as fetched, the
report of what they did, and the tallies it sums per student."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from learning_account.domain.events import Decision
from learning_account.domain.model import Command, immutable
from learning_account.processing.outputs import OutputMessage

MAX_CONFLICT_RETRIES = 20
"""How often a batch or a sweep loads a student again whose version moved under its commit."""


@immutable
class InputRecord:
    """A record as fetched; `timestamp_ms` is its record time once ordering.Merge held it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    """As the Kafka client reads them (names as text, values as bytes or None); a CloudEvent in
    binary mode has its attributes here."""


@dataclass(slots=True)
class BatchReport:
    outputs: list[OutputMessage] = field(default_factory=list)
    applied: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    dead_lettered: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    held: int = 0
    conflicts: int = 0
    snapshots: list[OutputMessage] = field(default_factory=list)
    """The committed accounts and stored outputs for the snapshot topics (see restore.py)."""


def source_allowed(source: str, allowed: Sequence[str] | None) -> bool:
    """LA_ALLOWED_SOURCES: None allows every source; an entry ending in `*` is a prefix."""
    if allowed is None:
        return True
    return any(
        source.startswith(entry[:-1]) if entry.endswith("*") else source == entry
        for entry in allowed
    )


def count_applied(tally: BatchReport, command: Command, decision: Decision) -> None:
    kind = type(command).__name__
    tally.applied[kind] = tally.applied.get(kind, 0) + 1
    for event in decision.events:
        reason = getattr(event, "reason", None)
        if reason is not None:
            tally.rejected[str(reason)] = tally.rejected.get(str(reason), 0) + 1


def add_tally(report: BatchReport, tally: BatchReport) -> None:
    for kind, n in tally.applied.items():
        report.applied[kind] = report.applied.get(kind, 0) + n
    for reason, n in tally.rejected.items():
        report.rejected[reason] = report.rejected.get(reason, 0) + n
    report.duplicates += tally.duplicates
    report.dead_lettered += tally.dead_lettered
    report.held += tally.held
