"""Field types shared by the messages: student id, codes, event id and source, academic year.

An academic year is bounded by the record's time: from 2008-2009 to one year after the academic
year of its timestamp (`record_time`, `latest_academic_year`).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Final

from pydantic import AfterValidator, Field, StringConstraints, ValidationInfo
from pydantic_core import PydanticCustomError

from learning_account.domain.model import BRUSSELS, academic_year_of

MAX_STUDENT_ID_CHARS: Final = 64
STUDENT_ID_PATTERN: Final = r"^[A-Za-z0-9._-]{1,64}$"

StudentId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_STUDENT_ID_CHARS, pattern=STUDENT_ID_PATTERN),
    Field(
        description="Student id: 1-64 characters of A-Z a-z 0-9 . _ -",
        examples=["r0123456"],
    ),
]

Code = Annotated[str, StringConstraints(min_length=1, max_length=256)]
NonEmptyText = Annotated[str, StringConstraints(min_length=1)]
MAX_EVENT_ID_CHARS: Final = 128
MAX_EVENT_SOURCE_CHARS: Final = 256
EventId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_ID_CHARS)]
EventSource = Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_SOURCE_CHARS)]


FIRST_ACADEMIC_YEAR: Final = 2008
"""2008-2009, the learning account's first year."""
LAST_ACADEMIC_YEAR: Final = 9998
"""The last year the rules' calendar can compute, whatever a record's timestamp says."""
#: The validation context's key for the latest academic year a message may name.
LATEST_YEAR_CONTEXT: Final = "latest_academic_year"


_FIRST_RECORD_TIME: Final = datetime(FIRST_ACADEMIC_YEAR, 9, 1, tzinfo=BRUSSELS).timestamp()
_LAST_RECORD_TIME: Final = datetime(LAST_ACADEMIC_YEAR + 1, 12, 31, tzinfo=BRUSSELS).timestamp()


def record_time(timestamp_ms: int | None) -> float | None:
    """A record's time in epoch seconds from its timestamp; None (`decode` then takes the
    processing time) when it has none, or one before the learning account began or past the
    calendar (Kafka's -1, a producer stamping seconds or microseconds)."""
    if timestamp_ms is None or not _FIRST_RECORD_TIME <= timestamp_ms / 1000 <= _LAST_RECORD_TIME:
        return None
    return timestamp_ms / 1000


def latest_academic_year(stamped_at: float) -> int:
    """The latest academic year a record stamped at `stamped_at` (epoch seconds, as
    `record_time` gives) may name: one after the academic year of that moment in
    Europe/Brussels (contracts.md)."""
    day = datetime.fromtimestamp(stamped_at, BRUSSELS).date()
    return min(academic_year_of(day) + 1, LAST_ACADEMIC_YEAR)


def _consecutive_years(value: str, info: ValidationInfo) -> str:
    first, second = value.split("-")
    if int(second) != int(first) + 1:
        raise PydanticCustomError(
            "academic_year", "academic year must be two consecutive years, like 2016-2017"
        )
    context = info.context if isinstance(info.context, dict) else {}
    latest = context.get(LATEST_YEAR_CONTEXT)
    if latest is None:
        latest = latest_academic_year(time.time())
    if not FIRST_ACADEMIC_YEAR <= int(first) <= latest:
        raise PydanticCustomError(
            "academic_year",
            "academic year must lie between {first}-{first_end} and {last}-{last_end}"
            " (one year after the academic year of the record's time)",
            {
                "first": FIRST_ACADEMIC_YEAR,
                "first_end": FIRST_ACADEMIC_YEAR + 1,
                "last": latest,
                "last_end": latest + 1,
            },
        )
    return value


AcademicYear = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]{4}-[0-9]{4}$"),
    AfterValidator(_consecutive_years),
    Field(
        description=(
            "Academic year as YYYY-YYYY with consecutive years, from 2008-2009 to one year "
            "after the academic year of the record's timestamp (Europe/Brussels)"
        ),
        examples=["2016-2017"],
    ),
]
