"""Account snapshots on Kafka, and restoring every account from them into an empty Redis.

After each commit the service publishes, with the batch's outputs and before it commits the
input offsets, two kinds of record keyed by student id:
- on `learning-account.account-snapshots.v1` (compacted: the last value per key is kept
  forever) what the commit wrote of the student's stored account hash, by part: the account's
  core (state, version, applied digests: `redis_layout.CORE_FIELDS`) with each part it wrote (a
  year's rows, an applied-events list below `k`), one record per part, keyed
  `<student id>/<part>` (`account_snapshots`). The last record of all holds the latest core and
  the last of each key its part, so what compaction keeps is the whole account, and a record's
  size does not grow with the account's history;
- on `learning-account.outbox-snapshots.v1` (deleted after the outbox retention) the stored
  outputs of each step, with the time they expire, so a later duplicate re-publishes them.

`learning-account restore` reads both topics to their end and writes them into Redis: an account
input committed before it is then as the live service left it, however old its input topics'
history, and the held-result index is rebuilt from the restored accounts. It keeps, for the core
and for each part, the highest version it reads, whatever the order of the partitions (a
student's keys fall on different ones). Records of format 1 (the whole hash, keyed by the
student id), which earlier releases published, are restored as all of their parts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from learning_account.adapters.redis_layout import CORE_FIELDS, snapshot_parts
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
SNAPSHOT_FORMAT = 2
READ_FORMATS = (1, 2)
"""Format 1 wrote a student's whole account hash in one record keyed by the student id."""
ACCOUNT_SNAPSHOT_TYPE = "account-snapshot"
OUTBOX_SNAPSHOT_TYPE = "outbox-snapshot"


def _framed(meta: dict[str, object], *blobs: bytes) -> bytes:
    """A JSON line (orjson writes no raw newline), then the blobs as they are: no base64, so a
    snapshot is hardly larger than what it copies and fits where the copied bytes fit."""
    return b"".join((orjson.dumps({"format": SNAPSHOT_FORMAT, **meta}), b"\n", *blobs))


def _unframed(value: bytes, topic: str, offset: int) -> tuple[dict[str, Any], bytes]:
    line, _, rest = value.partition(b"\n")
    meta = orjson.loads(line)
    if not isinstance(meta, dict) or meta.get("format") not in READ_FORMATS:
        raise ValueError(f"{topic} offset {offset}: not a snapshot of format {READ_FORMATS}")
    return meta, rest


def account_snapshots(
    student_id: str, core: Mapping[bytes, bytes], parts: Mapping[bytes, Mapping[bytes, bytes]]
) -> list[OutputMessage]:
    """The records of an account's `core` (its `CORE_FIELDS` present) and of the `parts` a write
    changed (`redis_layout.snapshot_part`, each with its fields present): one per part, with the
    core, keyed `<student id>/<part>`; the core alone, keyed `<student id>/`, for none. A record
    lists its field names and sizes, then holds the values."""
    version = core.get(b"v", b"").decode()
    records = []
    for part, fields in sorted(parts.items()) or [(b"", {})]:
        held = {**core, **fields}
        names = sorted(held)
        blobs = [held[name] for name in names]
        listed = [[name.decode(), len(blob)] for name, blob in zip(names, blobs, strict=True)]
        meta: dict[str, object] = {
            "student_id": student_id,
            "part": part.decode(),
            "fields": listed,
        }
        records.append(
            OutputMessage(
                ACCOUNT_SNAPSHOTS_TOPIC,
                b"%s/%s" % (student_id.encode(), part),
                _framed(meta, *blobs),
                f"{student_id}/{part.decode()}@{version}",
                ACCOUNT_SNAPSHOT_TYPE,
            )
        )
    return records


def core_snapshot(student_id: str, fields: Mapping[bytes, bytes]) -> OutputMessage:
    """The record of the core alone of a stored account hash (after a write of the core only)."""
    return account_snapshots(student_id, snapshot_parts(fields)[0], {})[0]


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
    """Account snapshot records none of whose core and part was restored: an earlier version
    read after a later one (two instances publishing a student's records out of order)."""
    outputs: int = 0
    expired: int = 0
    """Stored outputs past the outbox retention, not restored (live would have dropped them)."""
    seconds: float = 0.0


class Restorer:
    """Writes snapshot records into a Redis: per student, the core and each part of the
    highest version read (`RedisStore.restore_parts`), then, at `finish`, the held index."""

    def __init__(self, store: RedisStore, held_deadline: Callable[[Account], float | None]):
        self.store = store
        self.held_deadline = held_deadline
        self.report = RestoreReport()
        self._parts: dict[tuple[str, str], list[bytes]] = {}
        self._students: set[str] = set()

    async def apply(self, topic: str, key: bytes | None, value: bytes | None, offset: int) -> None:
        if value is None:  # a tombstone: the account was erased (every key of it tombstoned)
            if topic == ACCOUNT_SNAPSHOTS_TOPIC and key is not None:
                student_id = key.decode().partition("/")[0]
                await self.store.forget_account(student_id)
                self._students.discard(student_id)
            return
        meta, blobs = _unframed(value, topic, offset)
        if topic == ACCOUNT_SNAPSHOTS_TOPIC:
            await self._account(meta, blobs)
        else:
            await self._outputs(meta, blobs)

    async def finish(self) -> RestoreReport:
        """The held index of every account restored (after the last record)."""
        self.report.accounts = await self.store.finish_restore(self._students, self.held_deadline)
        self._students.clear()
        return self.report

    async def _account(self, meta: dict[str, Any], blobs: bytes) -> None:
        fields: dict[bytes, bytes] = {}
        at = 0
        for name, size in meta["fields"]:
            fields[str(name).encode()] = blobs[at : at + int(size)]
            at += int(size)
        student_id = str(meta["student_id"])
        if meta["format"] == 1:  # the whole hash: all of its parts
            core, parts = snapshot_parts(fields)
        else:
            core = {name: fields.pop(name) for name in CORE_FIELDS if name in fields}
            parts = {str(meta["part"]).encode(): fields} if meta["part"] else {}
        version = int(core.get(b"v") or 0)
        self._students.add(student_id)
        if not await self.store.restore_parts(student_id, version, {b"": core, **parts}):
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
        await restorer.finish()
    finally:
        await close(consumer)
        await redis.aclose()
    restorer.report.seconds = round(time.monotonic() - started, 3)
    return restorer.report
