"""The applied-event lists of an account hash (`redis_layout.leaf` and `appended`): split by
digest prefix past `BUCKET_ENTRIES`, each digest's entries kept together and in order."""

from __future__ import annotations

from learning_account.adapters.lua import BUCKET_DEPTH, BUCKET_ENTRIES, ENTRY_BYTES, SPLIT
from learning_account.adapters.redis_layout import appended, bucket_names, leaf


def entry(prefix: str, n: int, content: int = 0) -> bytes:
    digest = (prefix + f"{n:016x}")[:16]
    return bytes.fromhex(digest) + content.to_bytes(4, "big")


def add(fields: dict[bytes, bytes], *entries: bytes) -> dict[bytes, bytes]:
    fields.update(appended(entries, fields.get))
    return fields


def test_a_list_stays_one_field_up_to_its_limit_then_splits_by_the_next_digit() -> None:
    entries = [entry(f"{n % 16:x}", n) for n in range(BUCKET_ENTRIES)]
    fields = add({}, *entries)
    assert fields == {b"k": b"".join(entries)}
    late = entry("3", 999)
    add(fields, late)
    assert fields[b"k"] == SPLIT
    assert sorted(fields) == [b"k", *(b"k:%x" % n for n in range(16))]
    assert fields[b"k:3"] == b"".join(e for e in [*entries, late] if e.hex()[0] == "3")
    assert leaf(late[:8].hex(), fields.get) == (b"k:3", fields[b"k:3"])


def test_a_digests_first_entry_stays_first_through_a_split() -> None:
    first, reuse = entry("a", 1, content=1), entry("a", 1, content=2)
    fields = add({}, first, *(entry("b", n) for n in range(BUCKET_ENTRIES - 1)))
    add(fields, reuse)
    assert fields[b"k:a"] == first + reuse


def test_a_split_list_without_entries_of_a_digit_is_found_empty_and_filled_there() -> None:
    fields = add({}, *(entry(f"5{n % 16:x}", n) for n in range(BUCKET_ENTRIES + 1)))
    assert b"k:7" not in fields
    assert leaf("7" * 16, fields.get) == (b"k:7", b"")
    add(fields, entry("7", 1))
    assert len(fields[b"k:7"]) == ENTRY_BYTES
    assert fields[b"k:5"] == SPLIT  # its 65 entries under one digit split on
    assert len(fields[b"k:50"]) == 5 * ENTRY_BYTES and len(fields[b"k:5f"]) == 4 * ENTRY_BYTES


def test_lists_split_no_deeper_than_the_deepest_name() -> None:
    same = "0a3f"
    fields = add({}, *(entry(same, n) for n in range(3 * BUCKET_ENTRIES)))
    deepest = bucket_names(same + "0" * 12)[BUCKET_DEPTH]
    assert deepest == b"k:0a3f" and len(fields[deepest]) == 3 * BUCKET_ENTRIES * ENTRY_BYTES
    assert [fields[name] for name in (b"k", b"k:0", b"k:0a", b"k:0a3")] == [SPLIT] * 4


def test_a_commit_that_splits_a_list_needs_no_field_below_it_read() -> None:
    read = {b"k": b"".join(entry("1", n) for n in range(BUCKET_ENTRIES))}
    changed = appended([entry("1", 999), entry("9", 1)], read.__getitem__)  # raises if asked
    assert changed[b"k"] == changed[b"k:1"] == SPLIT and changed[b"k:9"] == entry("9", 1)
    assert len(changed[b"k:1000"]) == (BUCKET_ENTRIES + 1) * ENTRY_BYTES
