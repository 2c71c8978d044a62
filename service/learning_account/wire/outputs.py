"""The output messages of contracts.md, documented as sent: data models and full-event models.

`processing.outputs` writes these messages on the hot path as plain JSON objects; a unit test
(tests/unit/test_output_models.py) reads every kind it writes back through these models.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field, WithJsonSchema

from learning_account.domain.events import EXHAUSTED_OPTIONS
from learning_account.domain.events import ExhaustionOption as ExhaustionOption
from learning_account.domain.model import EntryKind, Refusal
from learning_account.wire.amounts import Amount
from learning_account.wire.envelope import (
    OutputEventEnvelope,
    OutputModel,
    StudentEventEnvelope,
    absent,
    no_default,
)
from learning_account.wire.errors import ErrorCode
from learning_account.wire.fields import (
    AcademicYear,
    Code,
    EventId,
    EventSource,
    NonEmptyText,
    StudentId,
)
from learning_account.wire.topics import (
    BALANCE_CHANGED_TYPE,
    CREDIT_EXHAUSTED_TYPE,
    CREDIT_LOW_TYPE,
    DEAD_LETTERED_TYPE,
    EVENT_REJECTED_TYPE,
    EXAM_RESULT_RECORDED_TYPE,
    REGISTRATIONS_TOPIC,
)

DEAD_LETTER_PAYLOAD_LIMIT: Final = 64 * 1024

# The rules core owns the refusals; the wire speaks the same values.
RejectionReason = Refusal


#: The `options` of every credit-exhausted event, in the contract's order.
EXHAUSTION_OPTIONS: Final = EXHAUSTED_OPTIONS
REJECTION_REASONS: Final = tuple(reason.value for reason in RejectionReason)

# --- Output data --------------------------------------------------------------------------------


class CausedBy(OutputModel):
    """The input event an output answers."""

    source: EventSource = Field(examples=["urn:institution:kuleuven:sis"])
    id: EventId = Field(examples=["7f1c2e4a-1f7e-4a53-9c55-0d6a3c1c2b10"])
    type: NonEmptyText = Field(examples=[EXAM_RESULT_RECORDED_TYPE])


class Entry(OutputModel):
    """One booking on the account, to one academic year."""

    kind: EntryKind = Field(
        description=(
            "opened (+140), invested (negative), acquired, bonus (both negative for a pass "
            "corrected away), refunded, restored, degree_deduction (-140), rebuilt (one per "
            "rebuilt year)"
        ),
        examples=["acquired"],
    )
    amount: Amount = Field(
        description="Signed credits, a multiple of 0.25", examples=[6, -60, 1.25]
    )
    course_unit_code: Code | None = Field(
        default=None,
        description="The course unit, or null for entries without one (opened, degree, rebuilt)",
        examples=["PSY101", None],
    )
    academic_year: AcademicYear


class BalanceChanged(OutputModel):
    """One per input event that changed the balance."""

    student_id: StudentId
    academic_year: AcademicYear
    previous_balance: Amount = Field(description="0 for an account's first event", examples=[134])
    balance: Amount = Field(description="previous_balance + delta", examples=[146])
    delta: Amount = Field(description="Sum of the entries", examples=[12])
    entries: list[Entry]
    uncovered_credits: Amount = Field(
        description="Registered credits not covered by a positive balance (higher fee)",
        examples=[0],
    )
    additional_fee: bool = Field(
        description="The registration needed an exception (first master, exceptional admission)",
        examples=[False],
    )
    caused_by: CausedBy


class CreditExhausted(OutputModel):
    """The balance went from above 0 to 0 or below."""

    student_id: StudentId
    academic_year: AcademicYear
    balance: Amount = Field(examples=[-8])
    caused_by: CausedBy
    options: list[ExhaustionOption] = Field(
        description="Ways the student can still study",
        examples=[[option.value for option in ExhaustionOption]],
    )


class CreditLow(OutputModel):
    """The balance went from at or above a threshold to below it (one event per threshold)."""

    student_id: StudentId
    academic_year: AcademicYear
    balance: Amount = Field(examples=[56])
    threshold: Amount = Field(examples=[60])
    caused_by: CausedBy


class EventRejected(OutputModel):
    """A valid input event refused by a rule."""

    student_id: StudentId
    reason: RejectionReason = Field(examples=["insufficient_learning_credit"])
    detail: str = Field(description="Human-readable explanation", examples=["balance is -8"])
    caused_by: CausedBy


class DeadLettered(OutputModel):
    """An input message that could not be read or validated."""

    topic: NonEmptyText = Field(examples=[REGISTRATIONS_TOPIC])
    partition: int = Field(ge=0, examples=[0])
    offset: int = Field(ge=0, examples=[42])
    key: str | None = Field(
        description="The record key as text (base64 when not UTF-8); null when it had none",
        examples=["r0123456"],
    )
    error: str = Field(description="Why the message was refused, for people", examples=["not JSON"])
    error_code: ErrorCode = Field(
        description="Why the message was refused, stable for machines", examples=["not_json"]
    )
    payload: str = Field(
        description="The original message as text (base64 when not UTF-8), cut at 64 KiB",
        examples=['{"specversion": "1.0"'],
    )
    payload_encoding: Annotated[
        Literal["base64"] | None, WithJsonSchema({"type": "string", "const": "base64"})
    ] = Field(
        default=None,
        exclude_if=absent,
        json_schema_extra=no_default,
        description='"base64" when the payload was not UTF-8; absent otherwise',
        examples=["base64"],
    )
    payload_truncated: Annotated[
        Literal[True] | None, WithJsonSchema({"type": "boolean", "const": True})
    ] = Field(
        default=None,
        exclude_if=absent,
        json_schema_extra=no_default,
        description="true when the message was longer than 64 KiB and `payload` is its start",
        examples=[True],
    )
    headers: Annotated[
        dict[str, str] | None,
        WithJsonSchema({"type": "object", "additionalProperties": {"type": "string"}}),
    ] = Field(
        default=None,
        exclude_if=absent,
        json_schema_extra=no_default,
        description=(
            "For a message in binary mode (CloudEvents Kafka binding): its `ce_` and "
            "`content-type` headers, re-published with the payload by a redrive; absent otherwise"
        ),
        examples=[{"ce_specversion": "1.0", "content-type": "application/json"}],
    )


# --- Full events (envelope + data), one model per type -----------------------------------------


class BalanceChangedEvent(OutputEventEnvelope, StudentEventEnvelope):
    type: Literal["be.flanders.learning-account.balance-changed.v1"] = BALANCE_CHANGED_TYPE
    data: BalanceChanged


class CreditExhaustedEvent(OutputEventEnvelope, StudentEventEnvelope):
    type: Literal["be.flanders.learning-account.credit-exhausted.v1"] = CREDIT_EXHAUSTED_TYPE
    data: CreditExhausted


class CreditLowEvent(OutputEventEnvelope, StudentEventEnvelope):
    type: Literal["be.flanders.learning-account.credit-low.v1"] = CREDIT_LOW_TYPE
    data: CreditLow


class EventRejectedEvent(OutputEventEnvelope, StudentEventEnvelope):
    type: Literal["be.flanders.learning-account.event-rejected.v1"] = EVENT_REJECTED_TYPE
    data: EventRejected


class DeadLetteredEvent(OutputEventEnvelope):
    type: Literal["be.flanders.learning-account.dead-lettered.v1"] = DEAD_LETTERED_TYPE
    subject: Annotated[str | None, WithJsonSchema({"type": "string"})] = Field(
        default=None,
        exclude_if=absent,
        json_schema_extra=no_default,
        description="The record key, when it is UTF-8 text; absent otherwise",
        examples=["r0123456"],
    )
    data: DeadLettered


OutputEvent = (
    BalanceChangedEvent
    | CreditExhaustedEvent
    | CreditLowEvent
    | EventRejectedEvent
    | DeadLetteredEvent
)

OutputData = BalanceChanged | CreditExhausted | CreditLow | EventRejected | DeadLettered
