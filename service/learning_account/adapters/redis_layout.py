"""How a student's learning account lies in Redis: its keys, its hash fields, their values.

Keys carry the student id as a Redis Cluster hash tag, so one student's keys share a slot:
- `la:{sid}:account`   hash: `s` the account without its year totals and course units, `v`
                       its version (optimistic concurrency), `k` the events applied, each its
                       idempotency digest (8 bytes, CloudEvents source + id) and its content
                       digest (4 bytes, `type` + the validated `data`), in order: the first
                       entry of a digest is the event that stands, a later one a refused
                       re-use (`id_conflict`). Past `BUCKET_ENTRIES` entries the list splits
                       by the digest's next hex digit (`k:<prefix>`, see `leaf`), so what an
                       event reads and writes of it does not grow with the history; `d`
                       idempotency digests alone (8 bytes each,
                       as accounts written before content digests have them: a re-delivery of
                       one is absorbed whatever its content), `p` those of sweeper steps whose
                       outputs may not be published yet, `t:<year>` the totals and
                       `u:<year>` the course units of one academic year
- `la:{sid}:out:<d>`   the outputs a step published, kept for the outbox retention, so a
                       duplicate delivery re-publishes them identically (`<d><c>`, digest
                       and content digest, for a refused re-use)
- `la:{sid}:restored`  hash, only while `restore` runs: the version it wrote of the account's
                       core and of each part (`snapshot_part`)
- `la:held`            sorted set: students with held exam results, by earliest deadline (0
                       while refusals wait for publication)

The in-memory store of `learning_account_dev` keeps the same fields, so both snapshot alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from learning_account.adapters.lua import BUCKET_DEPTH, BUCKET_ENTRIES, ENTRY_BYTES, SPLIT
from learning_account.adapters.state_codec import (
    decode_account,
    encode_core,
    encode_units,
    encode_years,
)
from learning_account.domain.model import Account
from learning_account.processing.store import DIGEST_BYTES, AccountWrite, Identity, LoadedAccount

HELD_INDEX_KEY = "la:held"
UNITS_FIELD_PREFIX = "u:"
TOTALS_FIELD_PREFIX = "t:"


def account_key(student_id: str) -> str:
    return f"la:{{{student_id}}}:account"


def outputs_key(student_id: str, digest: str) -> str:
    return f"la:{{{student_id}}}:out:{digest}"


def restore_marks_key(student_id: str) -> str:
    """While `restore` runs: the version restored of the account's core and of each part."""
    return f"la:{{{student_id}}}:restored"


def units_field(year: int) -> str:
    return f"{UNITS_FIELD_PREFIX}{year}"


def totals_field(year: int) -> str:
    return f"{TOTALS_FIELD_PREFIX}{year}"


def per_year(fields: Mapping[bytes, bytes], prefix: str) -> dict[int, bytes]:
    """The `<prefix><year>` fields of an account hash, by year."""
    start = prefix.encode()
    return {
        int(name[len(start) :]): blob for name, blob in fields.items() if name.startswith(start)
    }


def encode_state(write: AccountWrite) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The `s` field and the year fields (units, then totals) a write sets: only the years its
    steps touched."""
    account, touched = write.account, write.touched
    units = encode_units(account, touched.units, write.read)
    fields = [(units_field(year), rows) for year, rows in units.items()]
    fields += [
        (totals_field(year), row) for year, row in encode_years(account, touched.totals).items()
    ]
    return encode_core(account), fields


def decode_fields(student_id: str, fields: Mapping[bytes, bytes], *, with_units: bool) -> Account:
    """The account of a whole stored hash (its course units only `with_units`)."""
    units = per_year(fields, UNITS_FIELD_PREFIX) if with_units else {}
    totals = per_year(fields, TOTALS_FIELD_PREFIX)
    return decode_account(student_id, fields.get(b"s"), units, totals, with_units=with_units)


def load_fields(years: Sequence[int]) -> list[str]:
    """The year fields a load of `years` reads, in the order `loaded` takes them back."""
    return [name for year in years for name in (units_field(year), totals_field(year))]


ACCOUNT_LOAD_FIELDS = ("s", "v", "d", "p", "k")
"""The account fields every load reads, before the year fields of `load_fields` (`k`: the
applied-events list while it has not split, see `leaf`)."""


CORE_FIELDS = tuple(name.encode() for name in ACCOUNT_LOAD_FIELDS)
"""The account's core: the fields every load reads, and every snapshot record carries
(`snapshot_parts`)."""


def snapshot_part(name: bytes) -> bytes:
    """The part of an account a field is snapshotted with: `y:<year>` for a year's units and
    totals, the field itself for an applied-events list below `k` (`k:<prefix>`), b"" for the
    core (`CORE_FIELDS`, and a field of no other part)."""
    kind = name[:2]
    if kind == b"u:" or kind == b"t:":
        return b"y:" + name[2:]
    return name if kind == b"k:" else b""


def part_fields(part: bytes) -> tuple[bytes, ...]:
    """The fields a part is made of, present or not (the inverse of `snapshot_part`)."""
    if part.startswith(b"y:"):
        year = part[2:]
        return (b"u:" + year, b"t:" + year)
    return (part,) if part else CORE_FIELDS


def snapshot_parts(
    fields: Mapping[bytes, bytes],
) -> tuple[dict[bytes, bytes], dict[bytes, dict[bytes, bytes]]]:
    """A whole account hash as its core and its parts (`snapshot_part`), each with the fields
    present."""
    core: dict[bytes, bytes] = {}
    parts: dict[bytes, dict[bytes, bytes]] = {}
    for name, value in fields.items():
        part = snapshot_part(name)
        if part:
            parts.setdefault(part, {})[name] = value
        else:
            core[name] = value
    return core, parts


BUCKET_MAX_BYTES = BUCKET_ENTRIES * ENTRY_BYTES


@functools.lru_cache(maxsize=8192)
def bucket_names(digest: str) -> tuple[bytes, ...]:
    """The fields that may hold the entries of the event with this (hex) digest, shallowest
    first: `k`, then `k:<its first n hex digits>` for n up to `BUCKET_DEPTH` (cached for the
    few calls one event's load and commit make)."""
    deepest = b"k:" + digest[:BUCKET_DEPTH].encode()
    return (b"k", *[deepest[:end] for end in _NAME_ENDS])


_NAME_ENDS = range(3, 3 + BUCKET_DEPTH)


def split_names(events: Sequence[Identity]) -> tuple[bytes, ...]:
    """The fields below `k` a load reads for these events once `k` has split (every deeper
    `bucket_names`)."""
    if len(events) == 1:
        return bucket_names(events[0][0])[1:]
    names: dict[bytes, None] = {}
    for digest, _ in events:
        names.update(dict.fromkeys(bucket_names(digest)[1:]))
    return tuple(names)


def leaf(digest: str, value_of: Callable[[bytes], bytes | None]) -> tuple[bytes, bytes]:
    """The field that holds (or is to hold) the entries of `digest`, and what it holds.

    The lists of an account are named by digest prefixes none of which is another's prefix,
    and every shorter prefix of a list's is a field set to `SPLIT`: from `k` down, the first
    field of the digest's prefixes that is not `SPLIT` is its list (b"" when it does not
    exist). So only an account whose `k` has split needs more than `k` read; `value_of` is
    asked for the fields it needs, shallowest first (a reader of some fields only raises for
    one it did not read)."""
    value = value_of(b"k")
    if value != SPLIT:  # the common case: one list
        return b"k", value or b""
    names, depth = bucket_names(digest), 1
    while True:
        name = names[depth]
        value = value_of(name)
        if value is None:
            return name, b""
        if value != SPLIT or depth == BUCKET_DEPTH:
            return name, value
        depth += 1


def appended(
    entries: Sequence[bytes], value_of: Callable[[bytes], bytes | None]
) -> dict[bytes, bytes]:
    """The list fields to set to add `entries` (digest and content digest each, in order) to
    an account whose fields `value_of` gives (`k`, and where it has split every deeper
    `bucket_names` of their digests):
    each entry at the end of its digest's list, and a list grown past `BUCKET_ENTRIES` split
    by the next digit (and its parts again, down to `BUCKET_DEPTH`), its entries in their
    order (a digest's first entry stays first)."""
    listed = value_of(b"k") or b""
    if listed != SPLIT:
        if len(listed) + ENTRY_BYTES * len(entries) <= BUCKET_MAX_BYTES:
            return {b"k": listed + b"".join(entries)}  # the common case: one list, not full
    elif len(entries) == 1:  # a split account's common case: one event, its list not full
        name, listed = leaf(entries[0][:DIGEST_BYTES].hex(), value_of)
        if len(listed) + ENTRY_BYTES <= BUCKET_MAX_BYTES:
            return {name: listed + entries[0]}
    changed: dict[bytes, bytes] = {}
    emptied: set[bytes] = set()
    """Fields under a list split here that got no entry: they do not exist (nor were read)."""

    def current(name: bytes) -> bytes | None:
        if name in changed:
            return changed[name]
        return None if name in emptied else value_of(name)

    for entry in entries:
        name, listed = leaf(entry[:DIGEST_BYTES].hex(), current)
        changed[name] = listed + entry
        grown = [name]
        while grown:
            name = grown.pop()
            listed, depth = changed[name], len(name) - 2 if name != b"k" else 0
            if len(listed) <= BUCKET_MAX_BYTES or depth == BUCKET_DEPTH:
                continue
            changed[name] = SPLIT
            children: dict[bytes, bytes] = {}
            for at in range(0, len(listed), ENTRY_BYTES):
                moved = listed[at : at + ENTRY_BYTES]
                child = bucket_names(moved[:DIGEST_BYTES].hex())[depth + 1]
                children[child] = children.get(child, b"") + moved
            changed.update(children)
            grown.extend(children)
            prefix = name if depth else b"k:"
            emptied.update(prefix + b"%x" % n for n in range(16))
    return changed


def seen_key(student_id: str, applied: bytes, entries: bytes, event: Identity) -> int | str:
    """What a load finds for `event` in the account's `d` (`applied`) and `k` (`entries`)
    lists: 0 (new), 1 (its digest stands for other content: a re-use) or the outputs key of
    the step it re-delivers."""
    digest, content = event
    key = bytes.fromhex(digest)
    # find, not `in`: bytes.__contains__ first tries its argument as an integer (a TypeError
    # raised and cleared on every call)
    if applied.find(key) >= 0 and next(_aligned(applied, key, DIGEST_BYTES), None) is not None:
        return outputs_key(student_id, digest)
    if entries.find(key) < 0:
        return 0  # the common case, without a scan
    contents = [
        entries[at + DIGEST_BYTES : at + ENTRY_BYTES].hex()
        for at in _aligned(entries, key, ENTRY_BYTES)
    ]
    if not contents:
        return 0
    if contents[0] == content:
        return outputs_key(student_id, digest)
    if content in contents[1:]:
        return outputs_key(student_id, digest + content)
    return 1


def _aligned(listed: bytes, digest: bytes, width: int) -> Iterator[int]:
    """Where `digest` starts one of the `width`-byte entries of `listed`."""
    at = listed.find(digest)
    while at >= 0:
        if at % width == 0:
            yield at
        at = listed.find(digest, at + 1)


def loaded(
    student_id: str,
    events: Sequence[Identity],
    years: Sequence[int],
    values: Sequence[Any],
    outcomes: Sequence[Any],
) -> LoadedAccount:
    """A student from the `ACCOUNT_LOAD_FIELDS` and `load_fields(years)` values of its hash,
    and per event 0 (new), 1 (a re-use) or its stored outputs (b"" once the retention passed)."""
    state, version, pending = values[0], values[1], values[3] or b""
    fields = values[len(ACCOUNT_LOAD_FIELDS) :]
    units = {year: blob for year, blob in zip(years, fields[::2], strict=True) if blob}
    totals = {year: blob for year, blob in zip(years, fields[1::2], strict=True) if blob}
    unreadable = None
    try:
        account = decode_account(student_id, state, units, totals, read_years=years)
    except Exception as error:  # one corrupt account must not fail everyone's batch
        account, unreadable = Account(student_id), repr(error)
    entry = LoadedAccount(
        account,
        version.decode() if version else "",
        pending=digests(pending),
        unreadable=unreadable,
    )
    for identity, stored in zip(events, outcomes, strict=True):
        if stored == 1:
            entry.reused.add(identity)
        elif stored != 0:
            entry.seen[identity] = stored or None
    return entry


def index_score(deadline: float | None, *, remove: bool) -> str:
    """The held-index score argument of the scripts: a deadline, '-' to remove, '' to leave."""
    if deadline is not None:
        return repr(deadline)
    return "-" if remove else ""


def digests(listed: bytes) -> tuple[str, ...]:
    return tuple(listed[at : at + DIGEST_BYTES].hex() for at in range(0, len(listed), DIGEST_BYTES))
