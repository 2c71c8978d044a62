"""Compact JSON encoding of an account's state for Redis (short keys, dates as ordinals)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from .domain.model import (
    Account,
    Contract,
    CourseUnit,
    EventRef,
    HeldResult,
    RecordResult,
    ResultOutcome,
    YearTotals,
)

FORMAT = 1
_CONTRACT = {Contract.DIPLOMA: "d", Contract.CREDIT: "c", Contract.EXAM: "e"}
_CONTRACT_BACK = {code: contract for contract, code in _CONTRACT.items()}
_OUTCOME = {ResultOutcome.PASSED: "p", ResultOutcome.FAILED: "f", ResultOutcome.TOLERATED: "t"}
_OUTCOME_BACK = {code: outcome for outcome, code in _OUTCOME.items()}


def encode_account(account: Account) -> bytes:
    units = [
        [
            year,
            code,
            unit.credits,
            _CONTRACT[unit.contract],
            int(unit.uses_account),
            unit.border_date.toordinal(),
            None if unit.generation_student is None else int(unit.generation_student),
            None if unit.result is None else _OUTCOME[unit.result],
            int(unit.deregistered),
        ]
        for (year, code), unit in account.units.items()
    ]
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
        "y": {
            str(year): [t.invested, t.acquired, t.bonus, t.refunded, t.degree_deduction, t.rebuilt]
            for year, t in account.years.items()
        },
        "u": units,
    }
    if held:
        document["h"] = held
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def decode_account(student_id: str, blob: bytes | None) -> Account:
    if not blob:
        return Account(student_id)
    document = json.loads(blob)
    if document.get("f") != FORMAT:
        raise ValueError(f"unknown account state format {document.get('f')!r}")
    units = {
        (year, code): CourseUnit(
            credits=credits,
            contract=_CONTRACT_BACK[contract],
            uses_account=bool(uses),
            border_date=date.fromordinal(border),
            generation_student=None if generation is None else bool(generation),
            result=None if result is None else _OUTCOME_BACK[result],
            deregistered=bool(deregistered),
        )
        for (year, code, credits, contract, uses, border, generation, result, deregistered) in (
            document["u"]
        )
    }
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
        years={int(year): YearTotals(*totals) for year, totals in document["y"].items()},
        units=units,
        held=held,
    )
