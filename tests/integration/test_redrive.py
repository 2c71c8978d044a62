"""`learning-account redrive` against a real broker.

Dead letters are built with `outputs.dead_letter` (exactly what the service writes) and produced
to a dead-letter topic of this test; the originals go back to the real input topics, keyed by
student ids of this test only (the session's broker is shared), and are read back from there.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest

from learning_account.entrypoints.cli import main
from learning_account.ops.dead_letters import original_key, original_payload
from learning_account.ops.redrive import RedriveError, parse_since, redrive
from learning_account.processing.outputs import dead_letter
from learning_account.wire import (
    DEREGISTRATIONS_TOPIC,
    EXAM_RESULTS_TOPIC,
    INPUT_TOPICS,
    REGISTRATIONS_TOPIC,
    ErrorCode,
)
from learning_account_dev import events
from support.kafka import consume_to_end, create_topics, produce_json, unique_topic

RECENT = "2025-03-01T10:00:00.000Z"
OLD = "2020-01-01T00:00:00.000Z"


def test_original_payload_and_key_decoding() -> None:
    text = dead_letter("t", 0, 1, b"s1", b'{"a":1}', "bad", RECENT)
    document = json.loads(text.value)
    assert original_payload(document["data"]) == (b'{"a":1}', "")
    assert original_key(document) == b"s1"

    binary = dead_letter("t", 0, 2, b"\xff\x01", b"\x00\xffbin", "bad", RECENT)
    document = json.loads(binary.value)
    assert document["data"]["payload_encoding"] == "base64"
    assert "subject" not in document
    assert original_payload(document["data"]) == (b"\x00\xffbin", "")
    assert original_key(document) == b"\xff\x01"

    big = dead_letter("t", 0, 3, b"s", b"x" * (64 * 1024 + 10), "too large", RECENT)
    assert original_payload(json.loads(big.value)["data"]) == (None, "payload truncated at 64 KiB")
    exactly = dead_letter("t", 0, 4, b"s", b"y" * (64 * 1024), "too large", RECENT)
    assert original_payload(json.loads(exactly.value)["data"])[0] is None
    empty = dead_letter("t", 0, 5, None, None, "empty", RECENT)
    assert original_payload(json.loads(empty.value)["data"]) == (None, "empty payload")
    assert original_key(json.loads(empty.value)) is None


def test_parse_since() -> None:
    assert parse_since("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_since("2024-05-01T12:00:00Z") == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_since("2024-05-01T14:00:00+02:00") == datetime(2024, 5, 1, 12, tzinfo=UTC)
    with pytest.raises(RedriveError):
        parse_since("yesterday")


async def _ours(bootstrap: str, keys: set[bytes]) -> list[tuple[str, bytes | None, bytes | None]]:
    records = await consume_to_end(bootstrap, list(INPUT_TOPICS), timeout=30)
    return sorted(
        ((r.topic, r.key, r.value) for r in records if r.key in keys),
        key=lambda item: (item[0], item[1] or b"", item[2] or b""),
    )


async def test_redrive_filters_dry_run_and_round_trip(kafka_bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:8]
    s_a, s_b, s_c, s_d, s_e = (f"rd-{tag}-{n}" for n in "abcde")
    bin_key = b"\xff" + tag.encode()
    payload_a = events.to_bytes(events.registration(s_a, 2024, {"X1": 6}))
    payload_e = events.to_bytes(
        events.deregistration(s_e, 2024, ["X1"], datetime(2024, 10, 1).date())
    )
    binary = b"\x00\xff\xfe binary \x80"
    specs = [
        # (original topic, key, payload, error, time of the dead letter)
        (REGISTRATIONS_TOPIC, s_a.encode(), payload_a, "validation failed: credits", RECENT),
        (EXAM_RESULTS_TOPIC, s_b.encode(), b"{broken", "not JSON: line 1", RECENT),
        (REGISTRATIONS_TOPIC, s_c.encode(), binary, "not UTF-8 text", RECENT),
        (REGISTRATIONS_TOPIC, s_d.encode(), b"z" * (70 * 1024), "message too large", RECENT),
        (DEREGISTRATIONS_TOPIC, s_e.encode(), payload_e, "not UTF-8 (old incident)", OLD),
        (REGISTRATIONS_TOPIC, s_a.encode(), payload_a, "validation failed: credits", RECENT),
        (REGISTRATIONS_TOPIC, bin_key, binary + b"2", "not UTF-8 key and value", RECENT),
    ]
    keys = {key for _, key, *_ in specs}
    dlq = unique_topic("dead-letter")
    await create_topics(kafka_bootstrap, {dlq: 2, **{t: 3 for t in INPUT_TOPICS}})
    letters = [
        dead_letter(topic, 0, 100 + n, key, payload, error, at)
        for n, (topic, key, payload, error, at) in enumerate(specs)
    ]
    await produce_json(kafka_bootstrap, dlq, [(m.key, m.value) for m in letters])

    # 1. dry run, no filter: everything matches, nothing is published
    calls: list[tuple[int, int | None]] = []
    report = await redrive(
        kafka_bootstrap,
        dry_run=True,
        dead_letter_topic=dlq,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert report.summary() == {
        "scanned": 7,
        "matched": 7,
        "republished": 0,
        "skipped": 1,
        "duplicates": 1,
        "dry_run": True,
    }
    assert calls[-1] == (7, 7)
    would = sorted(i.key or "" for i in report.items if i.action == "would_republish")
    # a key that is not UTF-8 is shown as the dead letter carries it: base64
    assert would == sorted([base64.b64encode(bin_key).decode(), s_a, s_b, s_c, s_e])
    [skipped] = [i for i in report.items if i.action == "skipped"]
    assert (skipped.key, skipped.reason) == (s_d, "payload truncated at 64 KiB")
    assert await _ours(kafka_bootstrap, keys) == []

    # 2. by original topic and error text (case-insensitive): A once, its twin is a duplicate
    report = await redrive(
        kafka_bootstrap,
        topic=REGISTRATIONS_TOPIC,
        error_contains="VALIDATION",
        dead_letter_topic=dlq,
    )
    assert (report.matched, report.republished, report.duplicates) == (2, 1, 1)

    # 3. by key
    report = await redrive(kafka_bootstrap, key=s_b, dead_letter_topic=dlq)
    assert (report.matched, report.republished, report.skipped) == (1, 1, 0)

    # 4. by time: the old incident (E) is left out; both binary payloads round-trip
    report = await redrive(
        kafka_bootstrap, error_contains="utf-8", since="2024-01-01", dead_letter_topic=dlq
    )
    assert (report.matched, report.republished) == (2, 2)

    # 5. the truncated one is skipped, not published
    report = await redrive(kafka_bootstrap, key=s_d, dead_letter_topic=dlq)
    assert (report.matched, report.republished, report.skipped) == (1, 0, 1)

    expected = sorted(
        [
            (REGISTRATIONS_TOPIC, s_a.encode(), payload_a),
            (EXAM_RESULTS_TOPIC, s_b.encode(), b"{broken"),
            (REGISTRATIONS_TOPIC, s_c.encode(), binary),
            (REGISTRATIONS_TOPIC, bin_key, binary + b"2"),
        ],
        key=lambda item: (item[0], item[1], item[2]),
    )
    assert await _ours(kafka_bootstrap, keys) == expected
    assert base64.b64encode(binary).decode() in letters[2].value.decode()


async def test_redrive_of_a_missing_topic_is_empty(kafka_bootstrap: str) -> None:
    report = await redrive(kafka_bootstrap, dead_letter_topic=unique_topic("absent"))
    assert report.summary()["scanned"] == 0


async def test_redrive_by_error_code(kafka_bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:8]
    specs = [  # (key, payload, error code)
        (f"code-{tag}-a", b"{broken", ErrorCode.NOT_JSON),
        (f"code-{tag}-b", b"\xff not utf-8", ErrorCode.NOT_UTF8),
        (f"code-{tag}-c", b'{"specversion": "1.0"}', ErrorCode.INVALID_ENVELOPE),
        (f"code-{tag}-d", b"{also broken", ErrorCode.NOT_JSON),
    ]
    dlq = unique_topic("dead-letter")
    await create_topics(kafka_bootstrap, {dlq: 1, **{t: 3 for t in INPUT_TOPICS}})
    letters = [
        dead_letter(REGISTRATIONS_TOPIC, 0, n, key.encode(), payload, "bad", RECENT, code)
        for n, (key, payload, code) in enumerate(specs)
    ]
    await produce_json(kafka_bootstrap, dlq, [(m.key, m.value) for m in letters])

    report = await redrive(
        kafka_bootstrap, error_code="not_json", dry_run=True, dead_letter_topic=dlq
    )
    assert sorted(item.key or "" for item in report.items) == [specs[0][0], specs[3][0]]
    both = await redrive(
        kafka_bootstrap, error_code=["not_utf8", "invalid_envelope"], dead_letter_topic=dlq
    )
    assert (both.matched, both.republished) == (2, 2)
    assert await _ours(kafka_bootstrap, {specs[1][0].encode(), specs[2][0].encode()}) == sorted(
        [(REGISTRATIONS_TOPIC, key.encode(), payload) for key, payload, _ in specs[1:3]]
    )


def test_redrive_refuses_an_unknown_error_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["redrive", "--error-code", "no_such_code"])
    assert exited.value.code == 2
    assert "not_json" in capsys.readouterr().err
