"""The pieces the hot path was made faster with behave like what they replaced."""

from __future__ import annotations

import dataclasses
import gc
import random
import uuid
from datetime import UTC, date, datetime

import orjson
import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from learning_account.adapters.redis_connect import redis_client
from learning_account.domain.events import EventRejected
from learning_account.domain.model import Contract, CourseUnit, EventRef, Refusal, ResultOutcome
from learning_account.domain.overlay import Overlay
from learning_account.ops.restore import _framed, outbox_snapshots
from learning_account.processing.outputs import (
    OUTPUT_ID_NAMESPACE,
    OutputMessage,
    decode_stored,
    encode_stored,
    now_text,
    output_id,
    split_stored,
    to_message,
    uuid5_text,
)
from learning_account.runtime import parse_gc_threshold, tune_gc
from learning_account.settings import Settings
from learning_account.wire import EVENT_REJECTED_TYPE, SERVICE_SOURCE, cloud_event


def test_an_overlay_reads_through_and_writes_on_top() -> None:
    base = {"a": 1, "b": 2}
    layer = Overlay.over(base)
    layer["b"] = 20
    layer["c"] = 30
    assert (layer["a"], layer["b"], layer["c"]) == (1, 20, 30)
    assert layer.get("b") == 20 and layer.get("z") is None and layer.get("z", 0) == 0
    assert "a" in layer and "c" in layer and "z" not in layer
    assert sorted(layer) == ["a", "b", "c"] and len(layer) == 3
    assert base == {"a": 1, "b": 2}  # the base is never written
    with pytest.raises(KeyError):
        layer["z"]
    with pytest.raises(TypeError):
        del layer["a"]


def test_an_overlay_of_an_overlay_copies_the_changes_and_keeps_one_base() -> None:
    base = {"a": 1}
    first = Overlay.over(base)
    first["a"] = 2
    second = Overlay.over(first)
    second["a"] = 3
    assert first["a"] == 2 and second["a"] == 3
    assert second.base is base


def test_immutable_values_compare_and_hash_by_value() -> None:
    one, same = EventRef("s", "1", "t"), EventRef("s", "1", "t")
    assert one == same and hash(one) == hash(same) and len({one, same}) == 1
    assert dataclasses.replace(one, id="2") == EventRef("s", "2", "t")
    assert not hasattr(one, "__dict__")  # slotted


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:6379/0", Connection),
        ("rediss://127.0.0.1:6380/0", SSLConnection),
        ("unix:///tmp/redis.sock", UnixDomainSocketConnection),
    ],
)
def test_commands_are_packed_by_hiredis_and_byte_for_byte_the_same(url: str, kind: type) -> None:
    connection_class = redis_client(url, cluster=False).connection_pool.connection_class
    assert issubclass(connection_class, kind) and connection_class is not kind
    fast = connection_class()
    plain = Connection()
    for args in [
        ("EVALSHA", "f" * 40, 2, "la:{r1}:account", b"\x00\xff", 7, 1.5, "é"),
        ("SCRIPT LOAD", "return 1"),
        (b"CONFIG GET", "maxmemory"),
        ("ZADD", "la:held", 1736000000.125, "r1"),
    ]:
        assert b"".join(fast.pack_command(*args)) == b"".join(plain.pack_command(*args))
    with pytest.raises(DataError):  # what hiredis does not take, redis-py's packer refuses
        fast.pack_command("SET", "k", True)


def test_a_unit_with_its_result_is_the_unit_replaced() -> None:
    unit = CourseUnit(24, Contract.CREDIT, False, date(2023, 10, 9), True, None, True)
    expected = dataclasses.replace(unit, result=ResultOutcome.TOLERATED)
    assert unit.with_result(ResultOutcome.TOLERATED) == expected


def test_gc_thresholds_are_three_counts_or_pythons_own() -> None:
    assert parse_gc_threshold("100000,50,100") == (100_000, 50, 100)
    assert parse_gc_threshold("python") is None
    for wrong in ("1,2", "0,10,10", "a,b,c", "10,-1,10"):
        with pytest.raises(ValueError):
            parse_gc_threshold(wrong)
    assert Settings.from_env({"LA_GC_THRESHOLD": "python"}).gc_threshold is None
    assert Settings.from_env({}).gc_threshold == (100_000, 50, 100)


def test_tuning_freezes_start_up_and_sets_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_gc((50_000, 20, 100))
        assert gc.get_threshold() == (50_000, 20, 100) and gc.get_freeze_count() > 0
        tune_gc(None)  # Python's own: left as it is
        assert gc.get_threshold() == (50_000, 20, 100)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _datetime_text(timestamp_ms: int) -> str:
    moment = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_record_times_are_written_as_datetime_writes_them() -> None:
    rng = random.Random(5)
    edges = [0, 1, 999, 59_999, 60_000, 1_700_000_000_000, 2**33 * 1000 - 1, 2**33 * 1000]
    stamps = edges + [rng.randrange(0, 2**33 * 1000) for _ in range(20_000)]
    stamps += [1_700_000_000_000 + rng.randrange(0, 10**7) for _ in range(5_000)]
    for stamp in stamps:
        assert now_text(stamp) == _datetime_text(stamp), stamp
    assert now_text(-1) == "1969-12-31T23:59:59.999Z"


def test_a_steps_stored_outputs_split_into_each_output_stored_alone() -> None:
    messages = [
        OutputMessage("t1", b"r1", b'{"a":"\\u001e\\u001f"}', "id-1", "type-1"),
        OutputMessage("t2", None, b"{}", "id-2", "type-2"),
        OutputMessage("t3", b"", b"[]", "id-3", "type-3"),
    ]
    assert split_stored(encode_stored(messages)) == [encode_stored([m]) for m in messages]
    stored = encode_stored(messages)
    assert [encode_stored([m]) for m in decode_stored(stored)] == split_stored(stored)


def test_an_output_is_the_cloud_event_of_its_data() -> None:
    cause = EventRef("urn:institution:x", "e-1", "be.flanders.registration-created.v1")
    event = EventRejected("r0000001", Refusal.ALREADY_REGISTERED, "none left", cause)
    for traceparent in (None, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"):
        message = to_message(event, "2024-01-02T03:04:05.678Z", traceparent)
        data = {
            "student_id": "r0000001",
            "reason": "already_registered",
            "detail": "none left",
            "caused_by": {"source": cause.source, "id": cause.id, "type": cause.type},
        }
        document = cloud_event(
            EVENT_REJECTED_TYPE,
            data,
            event_id=output_id("r0000001", cause, "event-rejected"),
            source=SERVICE_SOURCE,
            time="2024-01-02T03:04:05.678Z",
            subject="r0000001",
            traceparent=traceparent,
        )
        assert message.value == orjson.dumps(document)


def test_output_ids_are_the_uuid5_of_their_name() -> None:
    rng = random.Random(7)
    for n in range(2_000):
        name = f"r{n:07d}\nurn:x\n{rng.random()}\nbalance-changed" + "é" * (n % 3)
        assert uuid5_text(name) == str(uuid.uuid5(OUTPUT_ID_NAMESPACE, name))


def test_outbox_snapshot_records_are_framed_as_framed_writes_them() -> None:
    messages = [
        OutputMessage("t1", b"r1", b'{"a":1}', "id-1", "type-1"),
        OutputMessage("t2", b"r1", b'{"b":"\\u00e9"}', "id-2", "type-2"),
    ]
    for count in (1, 2):
        stored = encode_stored(messages[:count])
        records = outbox_snapshots('r1"\\é', "00ff", stored, 1_700_000_000_123)
        meta = {"student_id": 'r1"\\é', "digest": "00ff", "expires_ms": 1_700_000_000_123}
        assert [record.value for record in records] == [
            _framed({**meta, "part": number, "parts": count}, encode_stored([message]))
            for number, message in enumerate(messages[:count])
        ]
