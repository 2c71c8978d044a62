"""Account snapshots on Kafka, and restoring every account from them into an empty Redis.

After each commit the service publishes, with the batch's outputs and before it commits the
input offsets, two kinds of record keyed by student id:
- on `learning-account.account-snapshots.v1` (compacted: the last value per student is kept
  forever) the student's whole stored account hash: state, version, digests, year rows;
- on `learning-account.outbox-snapshots.v1` (deleted after the outbox retention) the stored
  outputs of each step, with the time they expire, so a later duplicate re-publishes them.

`learning-account restore` reads both topics to their end and writes them into Redis: an account
input committed before it is then as the live service left it, however old its input topics'
history, and the held-result index is rebuilt from the restored accounts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import Account
from learning_account.processing.outputs import (
    OutputMessage,
    decode_stored,
    encode_stored,
    split_stored,
)

if TYPE_CHECKING:
    from learning_account.bootstrap import KafkaClients
    from learning_account.settings import Settings

ACCOUNT_SNAPSHOTS_TOPIC = "learning-account.account-snapshots.v1"
OUTBOX_SNAPSHOTS_TOPIC = "learning-account.outbox-snapshots.v1"
SNAPSHOT_TOPICS = (ACCOUNT_SNAPSHOTS_TOPIC, OUTBOX_SNAPSHOTS_TOPIC)
SNAPSHOT_FORMAT = 1
ACCOUNT_SNAPSHOT_TYPE = "account-snapshot"
OUTBOX_SNAPSHOT_TYPE = "outbox-snapshot"


def _framed(meta: dict[str, object], *blobs: bytes) -> bytes:
    """A JSON line (orjson writes no raw newline), then the blobs as they are: no base64, so a
    snapshot is hardly larger than what it copies and fits where the copied bytes fit."""
    return b"".join((orjson.dumps({"format": SNAPSHOT_FORMAT, **meta}), b"\n", *blobs))


def _unframed(value: bytes, topic: str, offset: int) -> tuple[dict[str, Any], bytes]:
    line, _, rest = value.partition(b"\n")
    meta = orjson.loads(line)
    if not isinstance(meta, dict) or meta.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"{topic} offset {offset}: not a format {SNAPSHOT_FORMAT} snapshot")
    return meta, rest


def account_snapshot(student_id: str, fields: Mapping[bytes, bytes]) -> OutputMessage:
    """The record of a student's stored account hash: its field names and sizes, then values."""
    names = sorted(fields)
    blobs = [fields[name] for name in names]
    listed = [[name.decode(), len(blob)] for name, blob in zip(names, blobs, strict=True)]
    value = _framed({"student_id": student_id, "fields": listed}, *blobs)
    version = fields.get(b"v", b"").decode()
    return OutputMessage(
        ACCOUNT_SNAPSHOTS_TOPIC,
        student_id.encode(),
        value,
        f"{student_id}@{version}",
        ACCOUNT_SNAPSHOT_TYPE,
    )


def outbox_snapshots(
    student_id: str, digest: str, outputs: bytes, expires_ms: int
) -> list[OutputMessage]:
    """The records of one step's stored outputs, kept in Redis until `expires_ms` (Unix ms):
    one per output, each no larger than the output it copies plus a line. Each part is one
    output as `encode_stored` writes it, cut from the step's stored bytes at the record
    separators: the same bytes as `encode_stored([message])` of each message, without decoding
    them."""
    parts = split_stored(outputs)
    key = student_id.encode()
    # the meta line `_framed` writes, its part number the only difference between the parts:
    # orjson's compact JSON, so the line up to the number is written once
    step = {"student_id": student_id, "digest": digest, "expires_ms": expires_ms}
    head = orjson.dumps({"format": SNAPSHOT_FORMAT, **step})[:-1] + b',"part":'
    tail = b',"parts":%d}\n' % len(parts)
    return [
        OutputMessage(
            OUTBOX_SNAPSHOTS_TOPIC,
            key,
            b"".join((head, b"%d" % number, tail, part)),
            f"{student_id}/{digest}/{number}",
            OUTBOX_SNAPSHOT_TYPE,
        )
        for number, part in enumerate(parts)
    ]


@dataclass
class RestoreReport:
    accounts: int = 0
    stale: int = 0
    """Account snapshots older than one already restored (an earlier version written later)."""
    outputs: int = 0
    expired: int = 0
    """Stored outputs past the outbox retention, not restored (live would have dropped them)."""
    seconds: float = 0.0


class Restorer:
    """Writes snapshot records into a Redis, in the order they were published per student."""

    def __init__(self, store: RedisStore, held_deadline: Callable[[Account], float | None]):
        self.store = store
        self.held_deadline = held_deadline
        self.report = RestoreReport()
        self._parts: dict[tuple[str, str], list[bytes]] = {}

    async def apply(self, topic: str, key: bytes | None, value: bytes | None, offset: int) -> None:
        if value is None:  # a tombstone: the account was erased
            if topic == ACCOUNT_SNAPSHOTS_TOPIC and key is not None:
                await self.store.forget_account(key.decode())
            return
        meta, blobs = _unframed(value, topic, offset)
        if topic == ACCOUNT_SNAPSHOTS_TOPIC:
            await self._account(meta, blobs)
        else:
            await self._outputs(meta, blobs)

    async def _account(self, meta: dict[str, Any], blobs: bytes) -> None:
        fields: dict[bytes, bytes] = {}
        at = 0
        for name, size in meta["fields"]:
            fields[str(name).encode()] = blobs[at : at + int(size)]
            at += int(size)
        if await self.store.restore_account(str(meta["student_id"]), fields, self.held_deadline):
            self.report.accounts += 1
        else:
            self.report.stale += 1

    async def _outputs(self, meta: dict[str, Any], blob: bytes) -> None:
        """A step's outputs once its last part is read (its parts are consecutive: one key, one
        partition, published in order)."""
        step = (str(meta["student_id"]), str(meta["digest"]))
        if int(meta["part"]) == 0:
            self._parts[step] = []
        self._parts.setdefault(step, []).append(blob)
        if int(meta["part"]) < int(meta["parts"]) - 1:
            return
        messages = [message for part in self._parts.pop(step) for message in decode_stored(part)]
        left_ms = int(meta["expires_ms"]) - int(time.time() * 1000)
        if left_ms <= 0:
            self.report.expired += 1
            return
        await self.store.restore_outputs(*step, encode_stored(messages), left_ms)
        self.report.outputs += 1


async def restore(
    settings: Settings, *, redis_url: str | None = None, kafka: KafkaClients | None = None
) -> RestoreReport:
    """Every account and unexpired stored output of the snapshot topics, written into Redis."""
    from learning_account.bootstrap import account_store, processor, redis_for
    from learning_account.ops.reading import close, partitions_of
    from learning_account.ops.rebuild import history_consumer, read_partition

    started = time.monotonic()
    consumer = history_consumer(settings, kafka)
    redis = await redis_for(settings, redis_url)
    store = account_store(settings, redis)
    restorer = Restorer(store, processor(settings, store, live=False).held_deadline)
    try:
        # one partition after another, each from its beginning to its end
        for partition in await partitions_of(consumer, SNAPSHOT_TOPICS):
            async for chunk in read_partition(consumer, partition):
                for record in chunk:
                    await restorer.apply(record.topic, record.key, record.value, record.offset)
    finally:
        await close(consumer)
        await redis.aclose()
    restorer.report.seconds = round(time.monotonic() - started, 3)
    return restorer.report
