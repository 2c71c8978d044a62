"""aiokafka's reading of fetched records, made as tolerant as contracts.md asks of headers.

aiokafka decodes header names as strict UTF-8 while it iterates a fetched batch, and any error
there (that one, a corrupt batch, a codec it lacks) escapes `getmany` after the records of other
partitions were drained: their positions advanced, their records dropped. aiokafka has no public
hook for either, so `install_tolerant_reading()` patches two names of `aiokafka.consumer.fetcher`
(for the whole process):

- `MemoryRecords`: a record batch whose header names are not UTF-8 is read again here, the names
  decoded with `surrogateescape` (such a header is never a CloudEvents one; the record is read);
- `PartitionRecords`: any other failure to read a partition's records ends that partition's
  share of the fetch with an *unreadable* record at the first offset not read, so `getmany`
  returns what it drained and the partition's position stays at that offset.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka import codec as kafka_codec
from aiokafka.consumer import fetcher
from aiokafka.record.util import decode_varint

_ORIGINAL_MEMORY_RECORDS = fetcher.MemoryRecords
_ORIGINAL_PARTITION_RECORDS = fetcher.PartitionRecords

# a v2 record batch: base offset, length, leader epoch, magic, crc, attributes, last offset delta,
# first and max timestamp, producer id and epoch, base sequence, record count
_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
_LENGTH_END = 12  # base offset and length: the rest of the batch is `length` bytes
_MAGIC_AT = 16
_LOG_APPEND_TIME = 1
_DECOMPRESS = {
    1: kafka_codec.gzip_decode,
    2: lambda data: kafka_codec.snappy_decode(bytes(data)),
    3: lambda data: kafka_codec.lz4_decode(bytes(data)),
    4: lambda data: kafka_codec.zstd_decode(bytes(data)),
}


class Unreadable:
    """Why a partition could not be read from the marker record's offset on (see unreadable())."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"Unreadable({self.error!r})"


def unreadable(record: ConsumerRecord[Any, Any]) -> Unreadable | None:
    """The failure a record stands for, or None for a record read from the broker.

    The marker rides in `checksum`, which a v2 record never has and the wire cannot forge.
    """
    checksum = record.checksum
    return checksum if isinstance(checksum, Unreadable) else None


def install_tolerant_reading() -> None:
    """Patch aiokafka's fetcher (idempotent; every consumer of the process is affected)."""
    # no public hook: aio-libs/aiokafka#321 asks for a way past a record the fetcher cannot read
    fetcher.MemoryRecords = _TolerantMemoryRecords
    fetcher.PartitionRecords = _TolerantPartitionRecords


class _Record(NamedTuple):
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    checksum: None = None


class _TolerantMemoryRecords:
    """aiokafka's MemoryRecords, keeping each batch's bytes to read it again when needed."""

    def __init__(self, data: bytes) -> None:
        self._records = _ORIGINAL_MEMORY_RECORDS(data)
        self._data = memoryview(data)
        self._start = 0

    def size_in_bytes(self) -> int:
        return int(self._records.size_in_bytes())

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        if batch is None:
            return None
        start = self._start
        (length,) = struct.unpack_from(">i", self._data, start + 8)
        self._start = end = start + _LENGTH_END + length
        if self._data[start + _MAGIC_AT] < 2:
            return batch  # message formats 0 and 1 have no headers
        return _TolerantBatch(batch, self._data[start:end])


class _TolerantBatch:
    """One v2 batch as aiokafka reads it, read here instead from the record it fails on."""

    def __init__(self, batch: Any, data: memoryview) -> None:
        self._batch = batch
        self._data = data
        self._read = 0
        self._rest: Iterator[_Record] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __iter__(self) -> _TolerantBatch:
        iter(self._batch)  # aiokafka's batch decompresses there
        return self

    def __next__(self) -> Any:
        if self._rest is None:
            try:
                record = next(self._batch)
            except UnicodeDecodeError:
                self._rest = itertools.islice(_read_batch(self._data), self._read, None)
            else:
                self._read += 1
                return record
        return next(self._rest)


def _read_batch(data: memoryview) -> Iterator[_Record]:
    """The records of a v2 batch, header names decoded with surrogateescape."""
    header = _BATCH_HEADER.unpack_from(data)
    base_offset, attributes = header[0], header[5]
    first_timestamp, max_timestamp, count = header[7], header[8], header[12]
    timestamp_type = (attributes >> 3) & 1
    body: Any = data[_BATCH_HEADER.size :]
    codec = attributes & 0x07
    if codec:
        body = _DECOMPRESS[codec](body)
    buffer = bytes(body)
    pos = 0
    for _ in range(count):
        length, pos = decode_varint(buffer, pos)
        end = pos + length
        _attributes, pos = decode_varint(buffer, pos)
        timestamp_delta, pos = decode_varint(buffer, pos)
        offset_delta, pos = decode_varint(buffer, pos)
        key, pos = _bytes(buffer, pos)
        value, pos = _bytes(buffer, pos)
        header_count, pos = decode_varint(buffer, pos)
        headers: list[tuple[str, bytes | None]] = []
        for _ in range(header_count):
            name, pos = _bytes(buffer, pos)
            header_value, pos = _bytes(buffer, pos)
            headers.append(((name or b"").decode("utf-8", "surrogateescape"), header_value))
        pos = end
        timestamp = (
            max_timestamp
            if timestamp_type == _LOG_APPEND_TIME
            else first_timestamp + timestamp_delta
        )
        yield _Record(base_offset + offset_delta, timestamp, timestamp_type, key, value, headers)


def _bytes(buffer: bytes, pos: int) -> tuple[bytes | None, int]:
    length, pos = decode_varint(buffer, pos)
    if length < 0:
        return None, pos
    return buffer[pos : pos + length], pos + length


class _TolerantPartitionRecords(_ORIGINAL_PARTITION_RECORDS):  # type: ignore[misc, valid-type]
    """aiokafka's PartitionRecords, ending in an unreadable record where reading fails."""

    def __init__(self, tp: TopicPartition, *args: Any) -> None:
        super().__init__(tp, *args)
        self._partition = tp
        self._failed = False

    def __next__(self) -> Any:
        if self._failed:
            raise StopIteration
        try:
            return super().__next__()
        except StopIteration:
            raise
        except Exception as error:
            self._failed = True  # aiokafka's record generator is dead once it raised
            # next_fetch_offset is the first offset not returned yet: the position stays there
            return ConsumerRecord(
                topic=self._partition.topic,
                partition=self._partition.partition,
                offset=self.next_fetch_offset,
                timestamp=-1,
                timestamp_type=0,
                key=None,
                value=None,
                checksum=Unreadable(error),
                serialized_key_size=-1,
                serialized_value_size=-1,
                headers=(),
            )
