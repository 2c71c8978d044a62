"""Credits and amounts as JSON numbers, validated strictly, and as integer quarter-credits.

Credits and balances travel as JSON numbers; inside the service they are integer
quarter-credits (`to_quarters` / `from_quarters`), so the core never sees a float.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Final

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from learning_account.domain.numbers import (
    QUARTERS_PER_CREDIT,
    credits_number,
    from_quarters,
    to_quarters,
)

__all__ = ["Amount", "Credits", "from_quarters", "to_quarters"]


def _json_number(value: Any) -> Decimal:
    # Strings and booleans are not numbers on this wire, whatever Python would make of them.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise PydanticCustomError("number_type", "must be a JSON number")
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if not number.is_finite():
        raise PydanticCustomError("number_type", "must be a finite number")
    return number


# Every valid credit value (0.5 .. 60), keyed by its JSON number: a dict hit skips the slow path.
_CREDITS_BY_NUMBER: Final[dict[float, Decimal]] = {
    halves / 2: Decimal(halves) / 2 for halves in range(1, 121)
}


def _course_credits(value: Any) -> Decimal:
    if type(value) is int or type(value) is float:  # not bool, which would hash like 1
        credits = _CREDITS_BY_NUMBER.get(value)
        if credits is not None:
            return credits
    number = _json_number(value)
    if number <= 0 or number > 60 or (number * 2) % 1 != 0:
        raise PydanticCustomError("credits", "credits must be a positive multiple of 0.5 up to 60")
    return number


def _amount(value: Any) -> Decimal:
    number = _json_number(value)
    if (number * QUARTERS_PER_CREDIT) % 1 != 0:
        raise PydanticCustomError("amount", "amount must be a multiple of 0.25")
    return number


def _number_for_json(value: Decimal) -> int | float:
    # validated credits and amounts are whole quarters, so the product is exact
    return credits_number(int(value * QUARTERS_PER_CREDIT))


Credits = Annotated[
    Decimal,
    PlainValidator(_course_credits),
    PlainSerializer(_number_for_json, when_used="json"),
    WithJsonSchema({"type": "number", "exclusiveMinimum": 0, "maximum": 60, "multipleOf": 0.5}),
]

Amount = Annotated[
    Decimal,
    PlainValidator(_amount),
    PlainSerializer(_number_for_json, when_used="json"),
    WithJsonSchema({"type": "number", "multipleOf": 0.25}),
]
