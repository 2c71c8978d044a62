"""Topic names and CloudEvent types of contracts.md, and which types travel on which topic."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

REGISTRATIONS_TOPIC: Final = "learning-account.registrations.v1"
EXAM_RESULTS_TOPIC: Final = "learning-account.exam-results.v1"
DEREGISTRATIONS_TOPIC: Final = "learning-account.deregistrations.v1"

BALANCE_CHANGED_TOPIC: Final = "learning-account.balance-changed.v1"
CREDIT_EXHAUSTED_TOPIC: Final = "learning-account.credit-exhausted.v1"
CREDIT_LOW_TOPIC: Final = "learning-account.credit-low.v1"
REJECTIONS_TOPIC: Final = "learning-account.rejections.v1"
DEAD_LETTER_TOPIC: Final = "learning-account.dead-letter.v1"

INPUT_TOPICS: Final = (REGISTRATIONS_TOPIC, EXAM_RESULTS_TOPIC, DEREGISTRATIONS_TOPIC)
OUTPUT_TOPICS: Final = (
    BALANCE_CHANGED_TOPIC,
    CREDIT_EXHAUSTED_TOPIC,
    CREDIT_LOW_TOPIC,
    REJECTIONS_TOPIC,
    DEAD_LETTER_TOPIC,
)

# --- Event types --------------------------------------------------------------------------------

TYPE_PREFIX: Final = "be.flanders.learning-account."

COURSE_UNITS_REGISTERED_TYPE: Final = "be.flanders.learning-account.course-units-registered.v1"
EXAM_RESULT_RECORDED_TYPE: Final = "be.flanders.learning-account.exam-result-recorded.v1"
EXAM_RESULT_CORRECTED_TYPE: Final = "be.flanders.learning-account.exam-result-corrected.v1"
CREDITS_RESTORED_TYPE: Final = "be.flanders.learning-account.credits-restored.v1"
DEGREE_AWARDED_TYPE: Final = "be.flanders.learning-account.degree-awarded.v1"
COURSE_UNITS_DEREGISTERED_TYPE: Final = "be.flanders.learning-account.course-units-deregistered.v1"

BALANCE_CHANGED_TYPE: Final = "be.flanders.learning-account.balance-changed.v1"
CREDIT_EXHAUSTED_TYPE: Final = "be.flanders.learning-account.credit-exhausted.v1"
CREDIT_LOW_TYPE: Final = "be.flanders.learning-account.credit-low.v1"
EVENT_REJECTED_TYPE: Final = "be.flanders.learning-account.event-rejected.v1"
DEAD_LETTERED_TYPE: Final = "be.flanders.learning-account.dead-lettered.v1"

INPUT_TYPES: Final = (
    COURSE_UNITS_REGISTERED_TYPE,
    EXAM_RESULT_RECORDED_TYPE,
    EXAM_RESULT_CORRECTED_TYPE,
    CREDITS_RESTORED_TYPE,
    DEGREE_AWARDED_TYPE,
    COURSE_UNITS_DEREGISTERED_TYPE,
)
OUTPUT_TYPES: Final = (
    BALANCE_CHANGED_TYPE,
    CREDIT_EXHAUSTED_TYPE,
    CREDIT_LOW_TYPE,
    EVENT_REJECTED_TYPE,
    DEAD_LETTERED_TYPE,
)

#: Which event types may appear on which topic (contracts.md, "Input topics"/"Output topics").
TOPIC_TYPES: Final[Mapping[str, frozenset[str]]] = {
    REGISTRATIONS_TOPIC: frozenset({COURSE_UNITS_REGISTERED_TYPE}),
    EXAM_RESULTS_TOPIC: frozenset(
        {
            EXAM_RESULT_RECORDED_TYPE,
            EXAM_RESULT_CORRECTED_TYPE,
            CREDITS_RESTORED_TYPE,
            DEGREE_AWARDED_TYPE,
        }
    ),
    DEREGISTRATIONS_TOPIC: frozenset({COURSE_UNITS_DEREGISTERED_TYPE}),
    BALANCE_CHANGED_TOPIC: frozenset({BALANCE_CHANGED_TYPE}),
    CREDIT_EXHAUSTED_TOPIC: frozenset({CREDIT_EXHAUSTED_TYPE}),
    CREDIT_LOW_TOPIC: frozenset({CREDIT_LOW_TYPE}),
    REJECTIONS_TOPIC: frozenset({EVENT_REJECTED_TYPE}),
    DEAD_LETTER_TOPIC: frozenset({DEAD_LETTERED_TYPE}),
}

#: The topic each event type is published on (every type belongs to exactly one topic).
TYPE_TOPIC: Final[Mapping[str, str]] = {
    event_type: topic for topic, types in TOPIC_TYPES.items() for event_type in types
}


def short_name(event_type: str) -> str:
    """`be.flanders.learning-account.balance-changed.v1` -> `balance-changed`."""
    name = event_type.removeprefix(TYPE_PREFIX)
    return re.sub(r"\.v[0-9]+$", "", name)
