"""Today's date and academic year in Europe/Brussels (R6.3), read from the system clock."""

from __future__ import annotations

from datetime import date, datetime

from learning_account.domain.model import BRUSSELS, academic_year_of


def today_in_brussels(now: datetime | None = None) -> date:
    """The calendar date in Brussels at `now` (an aware datetime; the current time by default)."""
    moment = datetime.now(BRUSSELS) if now is None else now.astimezone(BRUSSELS)
    return moment.date()


def current_academic_year(today: date | None = None) -> int:
    """The academic year (by its first calendar year) of `today`; it turns on 1 September."""
    return academic_year_of(today_in_brussels() if today is None else today)
