"""Compact JSON encoding of an account's state for Redis (short keys, dates as ordinals).

Three parts: the core (balance, flags, held results) and, per academic year, the totals of that
year and its course units. Only the years a step names are read and written back, and units are
decoded lazily, so a long history makes neither the stored core nor an event dearer.

Format 2 kept every year's totals in the core; such a core is still read, and the first write
after it stores every year's totals on their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from typing import Any

import orjson

from .domain.model import (
    Account,
    Contract,
    CourseUnit,
    EventRef,
    HeldResult,
    Overlay,
    RecordResult,
    ResultOutcome,
    YearTotals,
)

FORMAT = 3
FORMATS_READ = (2, 3)
_CONTRACT = {Contract.DIPLOMA: "d", Contract.CREDIT: "c", Contract.EXAM: "e"}
_CONTRACT_BACK = {code: contract for contract, code in _CONTRACT.items()}
_OUTCOME = {ResultOutcome.PASSED: "p", ResultOutcome.FAILED: "f", ResultOutcome.TOLERATED: "t"}
_OUTCOME_BACK = {code: outcome for outcome, code in _OUTCOME.items()}

UnitKey = tuple[int, str]


class RawUnits(Mapping[UnitKey, CourseUnit]):
    """The stored unit rows of the loaded years, turned into CourseUnit objects only when read."""

    __slots__ = ("_cache", "by_year")

    def __init__(self, by_year: dict[int, dict[str, list[Any]]]) -> None:
        self.by_year = by_year  # year -> code -> [code, credits, flags, border days]
        self._cache: dict[UnitKey, CourseUnit] = {}

    def _row(self, key: UnitKey) -> list[Any] | None:
        rows = self.by_year.get(key[0])
        return None if rows is None else rows.get(key[1])

    def __getitem__(self, key: UnitKey) -> CourseUnit:
        unit = self.get(key)
        if unit is None:
            raise KeyError(key)
        return unit

    def get(self, key: UnitKey, default: CourseUnit | None = None) -> CourseUnit | None:  # type: ignore[override]
        unit = self._cache.get(key)
        if unit is None:
            row = self._row(key)
            if row is None:
                return default
            unit = self._cache[key] = _unit_from_row(key[0], row)
        return unit

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        rows = self.by_year.get(key[0])
        return rows is not None and key[1] in rows

    def __iter__(self) -> Iterator[UnitKey]:
        return ((year, code) for year, rows in self.by_year.items() for code in rows)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.by_year.values())


class RawYears(Mapping[int, YearTotals]):
    """The stored year totals, turned into YearTotals objects only when read."""

    __slots__ = ("_cache", "from_core", "rows")

    def __init__(self, rows: dict[str, list[int]], *, from_core: bool = False) -> None:
        self.rows = rows  # "2016" -> [invested, acquired, bonus, refunded, deduction, rebuilt]
        self.from_core = from_core  # read from a format-2 core: every year, to write out once
        self._cache: dict[int, YearTotals] = {}

    def __getitem__(self, year: int) -> YearTotals:
        totals = self._cache.get(year)
        if totals is None:
            totals = self._cache[year] = YearTotals(*self.rows[str(year)])
        return totals

    def get(self, year: int, default: YearTotals | None = None) -> YearTotals | None:  # type: ignore[override]
        return self[year] if str(year) in self.rows else default

    def __contains__(self, year: object) -> bool:
        return str(year) in self.rows

    def __iter__(self) -> Iterator[int]:
        return (int(year) for year in self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def _year_rows(years: Mapping[int, YearTotals]) -> dict[str, list[int]]:
    """Year totals by year text: the years a step changed (every year of an account built in
    memory, or read from a format-2 core)."""
    changes: Mapping[int, YearTotals]
    if isinstance(years, Overlay) and isinstance(years.base, RawYears):
        rows = dict(years.base.rows) if years.base.from_core else {}
        changes = years.changes
    elif isinstance(years, RawYears):
        return dict(years.rows) if years.from_core else {}
    else:
        rows, changes = {}, years
    for year, t in changes.items():
        rows[str(year)] = [
            t.invested,
            t.acquired,
            t.bonus,
            t.refunded,
            t.degree_deduction,
            t.rebuilt,
        ]
    return rows


def encode_years(account: Account) -> dict[int, bytes]:
    """The totals per academic year, for the years this account's steps changed."""
    return {int(year): orjson.dumps(row) for year, row in _year_rows(account.years).items()}


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


def _unit_row(key: UnitKey, unit: CourseUnit) -> list[Any]:
    """[code, credits, flags, border date as days from 1 September of the year]."""
    flags = (
        _CONTRACT_BITS[unit.contract]
        | unit.uses_account << 2
        | _GENERATION_BITS[unit.generation_student] << 3
        | _RESULT_BITS[unit.result] << 5
        | unit.deregistered << 7
    )
    return [key[1], unit.credits, flags, (unit.border_date - date(key[0], 9, 1)).days]


def _unit_from_row(year: int, row: list[Any]) -> CourseUnit:
    if len(row) == 8:  # the wider row of the first storage formats
        _, credits, contract, uses, border, generation, result, deregistered = row
        return CourseUnit(
            credits=credits,
            contract=_CONTRACT_BACK[contract],
            uses_account=bool(uses),
            border_date=date.fromordinal(border),
            generation_student=None if generation is None else bool(generation),
            result=None if result is None else _OUTCOME_BACK[result],
            deregistered=bool(deregistered),
        )
    _, credits, flags, border_days = row
    return CourseUnit(
        credits=credits,
        contract=_CONTRACT_OF_BITS[flags & 3],
        uses_account=bool(flags >> 2 & 1),
        border_date=date(year, 9, 1) + timedelta(days=border_days),
        generation_student=_GENERATION_OF_BITS[flags >> 3 & 3],
        result=_RESULT_OF_BITS[flags >> 5 & 3],
        deregistered=bool(flags >> 7 & 1),
    )


def encode_units(account: Account) -> dict[int, bytes]:
    """The course units per academic year, for the years this account's steps changed."""
    units = account.units
    if isinstance(units, Overlay) and isinstance(units.base, RawUnits):
        by_year: dict[int, dict[str, list[Any]]] = {}
        for key, unit in units.changes.items():
            rows = by_year.get(key[0])
            if rows is None:
                rows = by_year[key[0]] = dict(units.base.by_year.get(key[0], {}))
            rows[key[1]] = _unit_row(key, unit)
    elif isinstance(units, RawUnits):
        return {}
    else:  # an account built in memory: every year
        by_year = {}
        for key, unit in units.items():
            by_year.setdefault(key[0], {})[key[1]] = _unit_row(key, unit)
    return {
        year: orjson.dumps([rows[code] for code in sorted(rows)])
        for year, rows in sorted(by_year.items())
    }


def encode_core(account: Account) -> bytes:
    """Everything but the course units and the year totals."""
    held = [
        [
            h.held_at,
            h.command.event.source,
            h.command.event.id,
            h.command.event.type,
            h.command.academic_year,
            h.command.unit_code,
            _OUTCOME[h.command.outcome],
            h.command.recorded_on.toordinal(),
        ]
        for h in account.held
    ]
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


def decode_account(
    student_id: str,
    blob: bytes | None,
    units: Mapping[int, bytes] | None = None,
    totals: Mapping[int, bytes] | None = None,
) -> Account:
    """The core, with the totals and course units of the years given (the rest of history stays
    away: a step books only to its event's year and to years without enrolment, which have no
    totals yet)."""
    rows = {
        year: {row[0]: row for row in orjson.loads(blob_)} for year, blob_ in (units or {}).items()
    }
    year_rows = {str(year): orjson.loads(blob_) for year, blob_ in (totals or {}).items()}
    if not blob:
        return Account(student_id, years=RawYears(year_rows), units=RawUnits(rows))
    document = orjson.loads(blob)
    if document.get("f") not in FORMATS_READ:
        raise ValueError(f"unknown account state format {document.get('f')!r}")
    from_core = "y" in document
    if from_core:
        year_rows = {**document["y"], **year_rows}
    held = tuple(
        HeldResult(
            command=RecordResult(
                event=EventRef(source, event_id, event_type),
                student_id=student_id,
                academic_year=year,
                unit_code=code,
                outcome=_OUTCOME_BACK[outcome],
                recorded_on=date.fromordinal(recorded_on),
            ),
            held_at=held_at,
        )
        for (held_at, source, event_id, event_type, year, code, outcome, recorded_on) in (
            document.get("h", ())
        )
    )
    return Account(
        student_id=student_id,
        balance=document["b"],
        bonus_granted=document["g"],
        rebuilt_credits=bool(document["r"]),
        master_degree=bool(document["m"]),
        last_enrolment_year=document["e"],
        last_rebuilt_year=document["x"],
        generation_year=document["n"],
        years=RawYears(year_rows, from_core=from_core),
        units=RawUnits(rows),
        held=held,
    )


def encode_account(account: Account) -> dict[str, Any]:
    """The whole account as one document (core, every loaded year's totals and units), to
    compare."""
    document: dict[str, Any] = orjson.loads(encode_core(account))
    every_year = {year: account.years[year] for year in sorted(account.years)}
    document["y"] = _year_rows(every_year)
    document["u"] = {
        str(year): orjson.loads(rows) for year, rows in sorted(_all_units(account).items())
    }
    return document


def _all_units(account: Account) -> dict[int, bytes]:
    units = account.units
    plain = {key: units[key] for key in units}
    return encode_units(Account(account.student_id, units=plain))
