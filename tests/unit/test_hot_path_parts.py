"""The pieces the hot path was made faster with behave like what they replaced."""

from __future__ import annotations

import dataclasses
import gc
from datetime import date

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from learning_account.adapters.redis_connect import redis_client
from learning_account.domain.model import Contract, CourseUnit, EventRef, ResultOutcome
from learning_account.domain.overlay import Overlay
from learning_account.runtime import parse_gc_threshold, tune_gc
from learning_account.settings import Settings


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
