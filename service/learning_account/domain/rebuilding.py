"""R6: an account rebuilds by 10 credits for each academic year without enrolment, up to 60."""

from __future__ import annotations

from learning_account.domain.events import Entry
from learning_account.domain.model import REBUILD_CEILING, REBUILD_STEP, Account, EntryKind


def rebuild_entries(balance: int, last_counted_year: int | None, until_year: int) -> list[Entry]:
    """R6.1/R6.2: one `rebuilt` entry per year strictly between the two that adds credits."""
    entries: list[Entry] = []
    if last_counted_year is None:
        return entries
    for year in range(last_counted_year + 1, until_year):
        if balance >= REBUILD_CEILING:
            break
        amount = min(REBUILD_STEP, REBUILD_CEILING - balance)
        balance += amount
        entries.append(Entry(EntryKind.REBUILT, amount, year))
    return entries


def last_counted_year(account: Account) -> int | None:
    """The last year of enrolment or already rebuilt: rebuilding counts from the year after."""
    return latest(account.last_enrolment_year, account.last_rebuilt_year)


def latest(first: int | None, second: int | None) -> int | None:
    if first is None:
        return second
    if second is None:
        return first
    return max(first, second)
