"""Credits as the rules count them, integer quarter-credits, and back as people and the wire read
them: 140, 2.5, 1.25 (whole amounts without `.0`)."""

from __future__ import annotations

from decimal import Decimal

QUARTERS_PER_CREDIT = 4


def to_quarters(credits: Decimal | int | float | str) -> int:
    """Credits as integer quarter-credits (`Decimal("2.5")` -> 10); exact or ValueError."""
    quarters = Decimal(str(credits)) * QUARTERS_PER_CREDIT
    if quarters != quarters.to_integral_value():
        raise ValueError(f"{credits} is not a multiple of 0.25 credit")
    return int(quarters)


def from_quarters(quarters: int) -> Decimal:
    """Integer quarter-credits as credits (10 -> `Decimal("2.5")`)."""
    return Decimal(quarters) / QUARTERS_PER_CREDIT


def credits_number(quarters: int) -> int | float:
    """Quarter-credits as a JSON number: 6, 2.5, 1.25."""
    if quarters % QUARTERS_PER_CREDIT == 0:
        return quarters // QUARTERS_PER_CREDIT
    return quarters / QUARTERS_PER_CREDIT  # exact: quarters are dyadic fractions


def credits_text(quarters: int) -> str:
    """Quarter-credits as text: "140", "2.5", "-1.25"."""
    return str(credits_number(quarters))
