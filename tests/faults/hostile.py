"""Records as real producers and brokers emit them, beyond well-formed JSON in plain batches.

Mixed into the standard workload by the hostile-input scenario: compressed record batches of every
codec Kafka defines, headers with null values or non-UTF-8 names and values, unknown headers, and
bad records with a timestamp in microseconds. The valid ones belong to students of their own, so
their order against the rest of the workload does not matter.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiokafka.producer import message_accumulator
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

from learning_account import events as ev
from learning_account.wire import EXAM_RESULTS_TOPIC, REGISTRATIONS_TOPIC

CODECS = ("gzip", "snappy", "lz4", "zstd")


class RawHeaderName(str):
    """A header name that goes on the wire as bytes that are not UTF-8."""

    __slots__ = ("raw",)
    raw: bytes

    def __new__(cls, raw: bytes) -> RawHeaderName:
        name = super().__new__(cls, raw.decode("latin-1"))
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


@dataclass
class HostileRecord:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    timestamp_ms: int | None = None
    codec: str | None = None
    bad: bool = False
    """A record that must end as a dead letter (the rest must be applied)."""


@contextlib.contextmanager
def raw_header_names() -> Iterator[None]:
    """aiokafka's C record builder insists on str header names; its Python twin encodes them."""
    original = message_accumulator.DefaultRecordBatchBuilder
    message_accumulator.DefaultRecordBatchBuilder = _DefaultRecordBatchBuilderPy
    try:
        yield
    finally:
        message_accumulator.DefaultRecordBatchBuilder = original


def hostile_records(seed: int) -> dict[str, list[HostileRecord]]:
    """By input topic: the hostile records to send after that topic's first phase."""
    registrations: list[HostileRecord] = []
    results: list[HostileRecord] = []
    headers_of_kind: list[list[tuple[str, bytes | None]]] = [
        [("x-trace", None)],
        [(RawHeaderName(b"\xff\xfex-name"), b"1")],
        [("x-value", b"\xff\xfe\xfa")],
        [("x-unknown", b"whatever"), ("ce_ignored-in-structured-mode", None)],
        [],
    ]
    for n in range(40):
        sid = f"h{seed}-{n:03d}"
        codec = CODECS[n % len(CODECS)]
        headers = headers_of_kind[n % len(headers_of_kind)]
        units = {f"H{u}": 6 for u in range(3)}
        registrations.append(
            HostileRecord(
                REGISTRATIONS_TOPIC,
                sid.encode(),
                ev.to_bytes(ev.registration(sid, 2017, units)),
                headers=headers,
                codec=codec,
            )
        )
        for code in units:
            results.append(
                HostileRecord(
                    EXAM_RESULTS_TOPIC,
                    sid.encode(),
                    ev.to_bytes(ev.exam_result(sid, 2017, code, "passed" if n % 3 else "failed")),
                    headers=headers_of_kind[(n + 1) % len(headers_of_kind)],
                    codec=CODECS[(n + 1) % len(CODECS)],
                )
            )
    microseconds = int(time.time() * 1_000_000)
    registrations += [
        HostileRecord(
            REGISTRATIONS_TOPIC,
            b"bad-usec",
            b"not json, stamped in microseconds",
            timestamp_ms=microseconds,
            bad=True,
        ),
        HostileRecord(
            REGISTRATIONS_TOPIC,
            b"bad-null-header",
            json.dumps({"specversion": "1.0", "id": "x"}).encode(),
            headers=[("x-trace", None)],
            bad=True,
        ),
        HostileRecord(
            REGISTRATIONS_TOPIC,
            b"bad-lz4",
            b"[not, json]",
            headers=[(RawHeaderName(b"\xc3\x28"), None)],
            codec="lz4",
            bad=True,
        ),
    ]
    return {REGISTRATIONS_TOPIC: registrations, EXAM_RESULTS_TOPIC: results}
