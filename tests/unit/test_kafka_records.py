"""aiokafka's record reading as kafka_records patches it: fetched bytes in, records out."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import READ_UNCOMMITTED
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

from learning_account.adapters import kafka_records
from learning_account.adapters.kafka_records import unreadable

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
TP = TopicPartition("t", 0)


def batch(
    codec: int, headers: list[list[tuple[str, bytes | None]]], *, base_offset: int = 0
) -> bytes:
    """A v2 record batch as a producer builds it, header name "bad" written as bytes ff fe 21."""
    builder = _DefaultRecordBatchBuilderPy(
        magic=2,
        compression_type=codec,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for offset, record_headers in enumerate(headers):
        value = f"value-{offset}".encode() * 10
        builder.append(
            offset, timestamp=1_000 + offset, key=b"k", value=value, headers=record_headers
        )
    builder._buffer[:] = bytes(builder._buffer).replace(b"bad", b"\xff\xfe!")
    data = bytearray(builder.build())
    data[0:8] = base_offset.to_bytes(8, "big")
    return bytes(data)


def read(data: bytes, fetch_offset: int = 0) -> list[Any]:
    records = kafka_records._TolerantMemoryRecords(data)
    return list(
        kafka_records._TolerantPartitionRecords(
            TP, records, [], fetch_offset, None, None, True, READ_UNCOMMITTED
        )
    )


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
def test_a_header_name_that_is_not_utf8_does_not_make_the_batch_unreadable(codec: int) -> None:
    headers: list[list[tuple[str, bytes | None]]] = [
        [("ok", b"1")],
        [("bad", b"2"), ("null", None)],
        [],
        [("ok", b"3")],
    ]
    data = batch(codec, headers) + batch(codec, [[("ok", b"4")]], base_offset=4)
    records = read(data)
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    assert [r.value for r in records[:3]] == [f"value-{n}".encode() * 10 for n in range(3)]
    assert [r.timestamp for r in records] == [1_000, 1_001, 1_002, 1_003, 1_000]
    assert records[1].headers == (("\udcff\udcfe!", b"2"), ("null", None))
    assert records[3].headers == (("ok", b"3"),)
    assert all(unreadable(r) is None for r in records)


def test_a_fetch_that_starts_inside_the_batch_skips_what_came_before() -> None:
    records = read(batch(1, [[("bad", b"1")], [("bad", b"2")], [("ok", b"3")]]), fetch_offset=1)
    assert [(r.offset, r.headers) for r in records] == [
        (1, (("\udcff\udcfe!", b"2"),)),
        (2, (("ok", b"3"),)),
    ]


def test_a_corrupt_batch_ends_in_an_unreadable_record_at_the_first_offset_not_read() -> None:
    good = batch(0, [[], []])
    corrupt = bytearray(batch(0, [[], []], base_offset=2))
    corrupt[17:21] = b"\x00\x00\x00\x00"  # CRC
    records = read(good + bytes(corrupt))
    assert [r.offset for r in records] == [0, 1, 2]
    assert [unreadable(r) is None for r in records] == [True, True, False]
    failure = unreadable(records[2])
    assert failure is not None and "CRC" in str(failure.error)
