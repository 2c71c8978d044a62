"""Records as real producers and brokers emit them, beyond well-formed JSON in plain batches.

Mixed into the standard workload by the hostile-input scenario: compressed record batches of every
codec Kafka defines, headers with null values or non-UTF-8 names and values, unknown headers, and
bad records with a timestamp in microseconds. The valid ones belong to students of their own, so
their order against the rest of the workload does not matter.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from learning_account.wire import EXAM_RESULTS_TOPIC, REGISTRATIONS_TOPIC
from learning_account_dev import events as ev
from support.kafka import NAME_PLACEHOLDER

CODECS = ("gzip", "snappy", "lz4", "zstd")


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


def hostile_records(seed: int) -> dict[str, list[HostileRecord]]:
    """By input topic: the hostile records to send after that topic's first phase."""
    registrations: list[HostileRecord] = []
    results: list[HostileRecord] = []
    headers_of_kind: list[list[tuple[str, bytes | None]]] = [
        [("x-trace", None)],
        [(NAME_PLACEHOLDER.decode(), b"1")],
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
            headers=[(NAME_PLACEHOLDER.decode(), None)],
            codec="lz4",
            bad=True,
        ),
    ]
    return {REGISTRATIONS_TOPIC: registrations, EXAM_RESULTS_TOPIC: results}
