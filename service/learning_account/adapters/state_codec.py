"""Compact JSON encoding of an account's state for Redis (short keys, dates as ordinals).

Three parts: the core (balance, flags, held results) and, per academic year, the totals of that
year and its course units. Only the years a step names are read, and only the years whose
totals or units its decision touched are written back (a year's unchanged unit rows as read);
units are decoded lazily, so a long history makes neither the stored core nor an event dearer.
Looking up a year that was not read raises `YearNotRead`.

Format 4 adds to each course unit its bonus, its refund and whether it was restored (a year's
units written so start with the number 4); units of a year stored by format 3 have them only in
the year's totals (`domain.unit_facts`), and a year written again is written whole in format 4.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import date
from typing import Any

import orjson

from learning_account.domain.model import (
    Account,
    Contract,
    CorrectResult,
    CourseUnit,
    EventRef,
    HeldResult,
    RecordResult,
    ResultOutcome,
    UnitKey,
    YearTotals,
    format_academic_year,
)

FORMAT = 4
FORMATS_READ = (3, 4)
#: First element of a year's unit list written with per-unit bonus, refund and restoration.
UNITS_FORMAT = 4
_OUTCOME = {ResultOutcome.PASSED: "p", ResultOutcome.FAILED: "f", ResultOutcome.TOLERATED: "t"}
_OUTCOME_BACK = {code: outcome for outcome, code in _OUTCOME.items()}


class YearNotRead(LookupError):  # not a KeyError: `get` and `in` would take it for "absent"
    """A look-up of an academic year whose totals or units the store did not read."""

    def __init__(self, student_id: str, year: int) -> None:
        academic_year = format_academic_year(year)
        super().__init__(f"academic year {academic_year} of student {student_id} was not read")
        self.student_id = student_id
        self.year = year


class _ReadYears:
    """The academic years read (None: every year) and the check of a look-up against them."""

    __slots__ = ("read", "student_id")

    def __init__(self, student_id: str, read: frozenset[int] | None) -> None:
        self.student_id = student_id
        self.read = read

    def check(self, year: int) -> None:
        if self.read is not None and year not in self.read:
            raise YearNotRead(self.student_id, year)


class RawUnits(Mapping[UnitKey, CourseUnit]):
    """The stored unit rows of the years read, turned into CourseUnit objects only when read."""

    __slots__ = ("_cache", "by_year", "exact", "years")

    def __init__(
        self, by_year: dict[int, dict[str, list[Any]]], exact: set[int], years: _ReadYears
    ) -> None:
        self.by_year = by_year  # year -> code -> [code, credits, flags, border days(, bonus)]
        self.exact = exact  # the years whose rows hold each unit's bonus and refund
        self.years = years
        self._cache: dict[UnitKey, CourseUnit] = {}

    def __getitem__(self, key: UnitKey) -> CourseUnit:
        unit = self.get(key)
        if unit is None:
            raise KeyError(key)
        return unit

    def get(self, key: UnitKey, default: CourseUnit | None = None) -> CourseUnit | None:  # type: ignore[override]
        unit = self._cache.get(key)
        if unit is None:
            rows = self.by_year.get(key[0])
            row = None if rows is None else rows.get(key[1])
            if row is None:
                self.years.check(key[0])
                return default
            unit = self._cache[key] = _unit_from_row(key[0], row, key[0] in self.exact)
        return unit

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2 or not isinstance(key[0], int):
            return False
        rows = self.by_year.get(key[0])
        if rows is None:
            self.years.check(key[0])
            return False
        return key[1] in rows

    def __iter__(self) -> Iterator[UnitKey]:
        return ((year, code) for year, rows in self.by_year.items() for code in rows)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.by_year.values())


class RawYears(Mapping[int, YearTotals]):
    """The stored totals of the years read, turned into YearTotals objects only when read."""

    __slots__ = ("_cache", "rows", "years")

    def __init__(self, rows: dict[int, list[int]], years: _ReadYears) -> None:
        # 2016 -> [invested, acquired, bonus, refunded, deduction, rebuilt(, restored)]
        self.rows = rows
        self.years = years
        self._cache: dict[int, YearTotals] = {}

    def __getitem__(self, year: int) -> YearTotals:
        totals = self.get(year)
        if totals is None:
            raise KeyError(year)
        return totals

    def get(self, year: int, default: YearTotals | None = None) -> YearTotals | None:  # type: ignore[override]
        totals = self._cache.get(year)
        if totals is None:
            row = self.rows.get(year)
            if row is None:
                self.years.check(year)
                return default
            totals = self._cache[year] = YearTotals(*row)
        return totals

    def __contains__(self, year: object) -> bool:
        if not isinstance(year, int):
            return False
        if year in self.rows:
            return True
        self.years.check(year)
        return False

    def __iter__(self) -> Iterator[int]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def _year_row(totals: YearTotals) -> list[int]:
    row = list(totals.columns())
    if not row[-1]:  # the restored column, rare: written only when used
        row.pop()
    return row


def encode_years(account: Account, years: Iterable[int]) -> dict[int, bytes]:
    """The totals of each of `years` (the years a decision touched)."""
    return {year: orjson.dumps(_year_row(account.years[year])) for year in sorted(years)}


_CONTRACT_BITS = {Contract.DIPLOMA: 0, Contract.CREDIT: 1, Contract.EXAM: 2}
_CONTRACT_OF_BITS = {bits: contract for contract, bits in _CONTRACT_BITS.items()}
_RESULT_BITS = {
    None: 0,
    ResultOutcome.PASSED: 1,
    ResultOutcome.FAILED: 2,
    ResultOutcome.TOLERATED: 3,
}
_RESULT_OF_BITS = {bits: result for result, bits in _RESULT_BITS.items()}
_GENERATION_BITS = {None: 0, False: 1, True: 2}
_GENERATION_OF_BITS = {bits: flag for flag, bits in _GENERATION_BITS.items()}
# a unit's bonus and refund in two bits each, the common values without a number of their own
_NONE, _FULL, _PART, _UNKNOWN = 0, 1, 2, 3


def _bonus_bits(unit: CourseUnit) -> tuple[int, int | None]:
    """The bonus code and, for a part of the credits, the amount written after the border."""
    if unit.bonus is None:
        return _UNKNOWN, None
    if unit.bonus == 0:
        return _NONE, None
    if unit.bonus == unit.credits:
        return _FULL, None
    return _PART, unit.bonus


def _refund_bits(unit: CourseUnit) -> int:
    if unit.refunded is None:
        return _UNKNOWN
    if unit.refunded == 0:
        return _NONE
    return _FULL if unit.refunded == unit.credits else _PART  # part: half (R5.3)


def _unit_row(key: UnitKey, unit: CourseUnit) -> list[Any]:
    """[code, credits, flags, border date as days from 1 September of the year(, bonus)]."""
    bonus_code, bonus = _bonus_bits(unit)
    flags = (
        _CONTRACT_BITS[unit.contract]
        | unit.uses_account << 2
        | _GENERATION_BITS[unit.generation_student] << 3
        | _RESULT_BITS[unit.result] << 5
        | unit.deregistered << 7
        | bonus_code << 8
        | _refund_bits(unit) << 10
        | unit.restored << 12
    )
    row = [key[1], unit.credits, flags, unit.border_date.toordinal() - _september_first(key[0])]
    if bonus is not None:
        row.append(bonus)
    return row


_SEPTEMBER_FIRSTS: dict[int, int] = {}


def _september_first(year: int) -> int:
    """The ordinal of 1 September of `year`, the day a unit row's border date counts from."""
    ordinal = _SEPTEMBER_FIRSTS.get(year)
    if ordinal is None:
        ordinal = _SEPTEMBER_FIRSTS[year] = date(year, 9, 1).toordinal()
    return ordinal


def _bonus_of(code: int, credits: int, row: list[Any]) -> int | None:
    return (0, credits, row[4] if len(row) > 4 else None, None)[code]


def _refund_of(code: int, credits: int) -> int | None:
    return (0, credits, credits // 2, None)[code]


def _unit_from_row(year: int, row: list[Any], exact: bool = True) -> CourseUnit:
    credits, flags, border_days = row[1], row[2], row[3]
    # positional, in CourseUnit's field order: a hot path (every unit an event looks up)
    unit = CourseUnit(
        credits,
        _CONTRACT_OF_BITS[flags & 3],
        bool(flags & 4),
        date.fromordinal(_september_first(year) + border_days),
        _GENERATION_OF_BITS[flags >> 3 & 3],
        _RESULT_OF_BITS[flags >> 5 & 3],
        bool(flags & 128),
        _bonus_of(flags >> 8 & 3, credits, row),
        _refund_of(flags >> 10 & 3, credits),
        bool(flags & 4096),
    )
    return unit if exact else _before_format_4(unit)


def _before_format_4(unit: CourseUnit) -> CourseUnit:
    """A unit stored by format 3, without its own bonus and refund: unknown where it could
    have had one."""
    passed = unit.uses_account and unit.result is ResultOutcome.PASSED
    has_bonus = passed and unit.contract is Contract.DIPLOMA
    refundable = unit.uses_account and unit.deregistered
    return replace(unit, bonus=None if has_bonus else 0, refunded=None if refundable else 0)


def encode_units(
    account: Account, changed: Iterable[UnitKey], read: Account | None = None
) -> dict[int, bytes]:
    """The course units of each year with a unit in `changed` (what a decision touched), in
    format 4: the rows `read` holds for that year (the account as loaded) with the changed units
    encoded anew; every unit of the year anew when it was stored by format 3 or `read` is not
    one loaded from the store."""
    units = account.units
    stored = read.units if read is not None else None
    by_year: dict[int, dict[str, list[Any]]] = {}
    for key in sorted(changed):
        year = key[0]
        rows = by_year.get(year)
        if rows is None:
            rows = by_year[year] = _rows_kept(units, stored, year)
        rows[key[1]] = _unit_row(key, units[key])
    return {
        year: orjson.dumps([UNITS_FORMAT, *[rows[code] for code in sorted(rows)]])
        for year, rows in sorted(by_year.items())
    }


def _rows_kept(
    units: Mapping[UnitKey, CourseUnit], stored: Mapping[UnitKey, CourseUnit] | None, year: int
) -> dict[str, list[Any]]:
    """The rows of `year` to write besides its changed units: as read when they are format 4."""
    if isinstance(stored, RawUnits):
        stored.years.check(year)  # the year of a changed unit was looked up, so read
        if year in stored.exact or year not in stored.by_year:
            return dict(stored.by_year.get(year, {}))
    return {code: _unit_row((y, code), units[(y, code)]) for y, code in units if y == year}


def encode_core(account: Account) -> bytes:
    """Everything but the course units and the year totals."""
    held = [_held_row(h) for h in account.held]
    document: dict[str, Any] = {
        "f": FORMAT,
        "b": account.balance,
        "g": account.bonus_granted,
        "r": int(account.rebuilt_credits),
        "m": int(account.master_degree),
        "e": account.last_enrolment_year,
        "x": account.last_rebuilt_year,
        "n": account.generation_year,
    }
    if held:
        document["h"] = held
    return orjson.dumps(document)


def _held_row(held: HeldResult) -> list[Any]:
    """A held result, or a held correction (then a 1 at index 8, its date the correction's), and
    its partition number at index 9 when known."""
    command = held.command
    correction = isinstance(command, CorrectResult)
    day = command.corrected_on if isinstance(command, CorrectResult) else command.recorded_on
    row: list[Any] = [
        held.held_at,
        command.event.source,
        command.event.id,
        command.event.type,
        command.academic_year,
        command.unit_code,
        _OUTCOME[command.outcome],
        day.toordinal(),
    ]
    if held.partition is not None:
        row += [int(correction), held.partition]
    elif correction:
        row.append(1)
    return row


def _held_from_row(student_id: str, row: list[Any]) -> HeldResult:
    held_at, source, event_id, event_type, year, code, outcome, on = row[:8]
    event = EventRef(source, event_id, event_type)
    day = date.fromordinal(on)
    command: RecordResult | CorrectResult
    if len(row) > 8 and row[8]:
        command = CorrectResult(event, student_id, year, code, _OUTCOME_BACK[outcome], day)
    else:
        command = RecordResult(event, student_id, year, code, _OUTCOME_BACK[outcome], day)
    partition = row[9] if len(row) > 9 else None
    return HeldResult(command=command, held_at=held_at, partition=partition)


def decode_account(
    student_id: str,
    blob: bytes | None,
    units: Mapping[int, bytes] | None = None,
    totals: Mapping[int, bytes] | None = None,
    *,
    read_years: Collection[int] | None = None,
    with_units: bool = True,
) -> Account:
    """The core, with the totals and course units of the years given.

    `read_years` are the years whose fields the store read (None: every year, a whole hash), so
    a year among them without fields is new; `with_units` False: no course unit was read. The
    rest of history stays away: a step books only to its event's year and to years without
    enrolment, which have no totals yet (`domain.step.Step.rebuild_until`).
    """
    rows: dict[int, dict[str, list[Any]]] = {}
    exact: set[int] = set()
    for year, blob_ in units.items() if units else ():
        listed = orjson.loads(blob_)
        if listed and listed[0] == UNITS_FORMAT:
            exact.add(year)
            del listed[0]
        rows[year] = {row[0]: row for row in listed}
    year_rows = {year: orjson.loads(blob_) for year, blob_ in totals.items()} if totals else {}
    read = None if read_years is None else frozenset(read_years)
    years = RawYears(year_rows, _ReadYears(student_id, read))
    unit_years = _ReadYears(student_id, read if with_units else frozenset())
    if not blob:
        return Account(student_id, years=years, units=RawUnits(rows, exact, unit_years))
    document = orjson.loads(blob)
    if document.get("f") not in FORMATS_READ:
        raise ValueError(f"unknown account state format {document.get('f')!r}")
    listed_held = document.get("h")
    held = tuple([_held_from_row(student_id, row) for row in listed_held]) if listed_held else ()
    return Account(  # positional, in Account's field order
        student_id,
        document["b"],
        document["g"],
        bool(document["r"]),
        bool(document["m"]),
        document["e"],
        document["x"],
        document["n"],
        years,
        RawUnits(rows, exact, unit_years),
        held,
    )


def encode_account(account: Account) -> dict[str, Any]:
    """The whole account as one document (core, every year's totals and units read), to
    compare."""
    document: dict[str, Any] = orjson.loads(encode_core(account))
    document["y"] = {str(year): _year_row(account.years[year]) for year in sorted(account.years)}
    units = encode_units(account, set(account.units))
    document["u"] = {str(year): orjson.loads(rows) for year, rows in units.items()}
    return document
