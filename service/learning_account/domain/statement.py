"""Read models: the balance as of today and the statement table of R1.3 / R6.3."""

from __future__ import annotations

from dataclasses import dataclass

from learning_account.domain.events import Entry
from learning_account.domain.model import (
    BONUS_CAP,
    OPENING_BALANCE,
    REBUILD_CEILING,
    Account,
    YearTotals,
)
from learning_account.domain.rebuilding import last_counted_year, rebuild_entries


@dataclass(frozen=True, slots=True)
class StatementRow:
    academic_year: int
    start: int
    invested: int
    acquired: int
    bonus: int
    refunded: int
    degree_deduction: int
    rebuilt: int
    balance: int
    projected: bool = False
    restored: int = 0  # last, with a default: rows built before the column keep their meaning


@dataclass(frozen=True, slots=True)
class AccountView:
    student_id: str
    balance: int
    bonus_granted: int
    master_degree: bool
    as_of_academic_year: int
    remaining_bonus: int = 0
    rebuild_reserve: int = 0

    @property
    def exhausted(self) -> bool:
        return self.balance <= 0


def remaining_bonus(account: Account) -> int:
    """R3.3: the bonus still to get (60 - bonus granted), none once a rebuild added credits."""
    return 0 if account.rebuilt_credits else max(0, BONUS_CAP - account.bonus_granted)


def rebuild_reserve(balance: int) -> int:
    """R6.1: what years without enrolment could still add to a balance (up to 60)."""
    return max(0, REBUILD_CEILING - balance)


def projected_rebuild(account: Account, current_year: int) -> list[Entry]:
    """R6.3: the rebuild years completed by today without enrolment, not yet written."""
    if account.balance is None:
        return []
    return rebuild_entries(account.balance, last_counted_year(account), current_year)


def account_view(account: Account, current_year: int) -> AccountView:
    if account.balance is None:
        raise ValueError(f"student {account.student_id} has no learning account")
    projected = sum(entry.amount for entry in projected_rebuild(account, current_year))
    balance = account.balance + projected
    return AccountView(
        student_id=account.student_id,
        balance=balance,
        bonus_granted=account.bonus_granted,
        master_degree=account.master_degree,
        as_of_academic_year=current_year,
        remaining_bonus=remaining_bonus(account),
        rebuild_reserve=rebuild_reserve(balance),
    )


def statement(account: Account, current_year: int) -> list[StatementRow]:
    """Rows per academic year with entries, in year order, then projected rebuild years."""
    if account.balance is None:
        raise ValueError(f"student {account.student_id} has no learning account")
    rows: list[StatementRow] = []
    start = OPENING_BALANCE
    for year in sorted(account.years):
        rows.append(_row(year, start, account.years[year]))
        start = rows[-1].balance
    for entry in projected_rebuild(account, current_year):
        rebuilt = YearTotals(rebuilt=entry.amount)
        rows.append(_row(entry.academic_year, start, rebuilt, projected=True))
        start = rows[-1].balance
    return rows


def _row(year: int, start: int, totals: YearTotals, *, projected: bool = False) -> StatementRow:
    return StatementRow(
        academic_year=year,
        start=start,
        invested=totals.invested,
        acquired=totals.acquired,
        bonus=totals.bonus,
        refunded=totals.refunded,
        degree_deduction=totals.degree_deduction,
        rebuilt=totals.rebuilt,
        balance=start + totals.total,
        projected=projected,
        restored=totals.restored,
    )
