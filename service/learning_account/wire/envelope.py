"""The CloudEvents 1.0 envelope: the models every message shares, and `cloud_event`, the one
builder of a structured-mode message as a JSON object."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from learning_account.wire.fields import EventId, EventSource, NonEmptyText, StudentId

SERVICE_SOURCE: Final = "urn:learning-account:service"
SPEC_VERSION: Final = "1.0"
JSON_CONTENT_TYPE: Final = "application/json"


def cloud_event(
    event_type: str,
    data: Any,
    *,
    event_id: str,
    source: str,
    time: str,
    subject: str | None = None,
    traceparent: str | None = None,
) -> dict[str, Any]:
    """A structured-mode CloudEvent as a JSON object, attributes in the contract's order;
    `subject` and `traceparent` are left out when None."""
    document: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": event_id,
        "source": source,
        "type": event_type,
        "time": time,
    }
    if subject is not None:
        document["subject"] = subject
    document["datacontenttype"] = JSON_CONTENT_TYPE
    if traceparent is not None:
        document["traceparent"] = traceparent  # CloudEvents distributed-tracing extension
    document["data"] = data
    return document


# --- Base models --------------------------------------------------------------------------------


class WireModel(BaseModel):
    """Strict, immutable, forward compatible: ill-typed known fields fail, unknown ones vanish."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class EventEnvelope(WireModel):
    """CloudEvents 1.0 structured-mode attributes shared by every message."""

    specversion: Literal["1.0"] = Field(
        description="CloudEvents specification version", examples=["1.0"]
    )
    id: EventId = Field(
        description=(
            "Event id, unique per source (1-128 characters); the student, `source` and `id` are "
            "the idempotency key"
        ),
        examples=["7f1c2e4a-1f7e-4a53-9c55-0d6a3c1c2b10"],
    )
    source: EventSource = Field(
        description="URI reference of the producing system (1-256 characters)",
        examples=["urn:institution:kuleuven:sis"],
    )
    time: AwareDatetime | None = Field(
        default=None,
        description="When the event happened (RFC 3339, with offset)",
        examples=["2016-09-20T09:12:00Z"],
    )
    datacontenttype: str | None = Field(
        default=None, description="Media type of `data`", examples=[JSON_CONTENT_TYPE]
    )
    traceparent: str | None = Field(
        default=None,
        description=(
            "CloudEvents distributed-tracing extension (W3C trace context). On an input it is "
            "continued; outputs carry the span that applied their input (when tracing is on)."
        ),
        examples=["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
    )


class StudentEventEnvelope(EventEnvelope):
    """An event about one student: `subject` is the student id and equals `data.student_id`."""

    subject: StudentId

    @model_validator(mode="after")
    def _subject_is_the_student(self) -> StudentEventEnvelope:
        student_id = getattr(getattr(self, "data", None), "student_id", None)
        if student_id is not None and student_id != self.subject:
            raise PydanticCustomError(
                "subject_mismatch",
                "subject '{subject}' does not equal data.student_id '{student_id}'",
                {"subject": self.subject, "student_id": student_id},
            )
        return self


def absent(value: object) -> bool:
    """`exclude_if` of an output field left out of the JSON when it has no value."""
    return value is None


def no_default(schema: dict[str, Any]) -> None:
    """`json_schema_extra` of such a field: left out, it has no value, not a null one."""
    schema.pop("default", None)


def _now() -> datetime:
    return datetime.now(UTC)


#: W3C trace context `traceparent`: version, trace id, parent span id, flags (lowercase hex).
TRACEPARENT_PATTERN: Final = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"


class OutputModel(WireModel):
    """Part of what the service publishes, documented as sent.

    Every field is on the wire (null where nullable), except those declared with
    `exclude_if=absent`: those are left out when they have no value, so their schema is the
    present value's and they are not required.
    """

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class OutputEventEnvelope(OutputModel, EventEnvelope):
    """Envelope of what the service publishes (always JSON, always this source)."""

    specversion: Literal["1.0"] = Field(
        default="1.0", description="CloudEvents specification version", examples=["1.0"]
    )
    source: Literal["urn:learning-account:service"] = Field(
        default=SERVICE_SOURCE,
        description="The learning-account service",
        examples=[SERVICE_SOURCE],
    )
    id: NonEmptyText = Field(
        description=(
            "Derived from the student, the input event's source and id and the output kind, so "
            "a re-published output has the same id: deduplicate on it"
        ),
        examples=["5b0c8f1e-4f55-5a53-8f0e-8a6a2b0f7c11"],
    )
    time: AwareDatetime = Field(
        default_factory=_now,
        description=(
            "When the service produced the event (RFC 3339); a dead letter carries its "
            "record's timestamp"
        ),
        examples=["2017-02-10T14:30:01.000Z"],
    )
    datacontenttype: Literal["application/json"] = Field(
        default=JSON_CONTENT_TYPE, description="Media type of `data`", examples=[JSON_CONTENT_TYPE]
    )
    traceparent: Annotated[
        str | None, WithJsonSchema({"type": "string", "pattern": TRACEPARENT_PATTERN})
    ] = Field(
        default=None,
        exclude_if=absent,
        json_schema_extra=no_default,
        description=(
            "CloudEvents distributed-tracing extension (W3C trace context): the span that "
            "applied the input; present only when tracing is on"
        ),
        examples=["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
    )
