"""Why a record is not a valid message: a readable reason and a stable error code."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

#: Readable error text is cut here, so a hostile payload can not bloat a dead letter or a log.
MAX_REASON_CHARS: Final = 500


class ErrorCode(StrEnum):
    """Why a message was dead-lettered: stable, for machines and `redrive --error-code`."""

    NOT_JSON = "not_json"
    NOT_UTF8 = "not_utf8"
    TOO_LARGE = "too_large"
    INVALID_ENVELOPE = "invalid_envelope"
    UNKNOWN_TYPE = "unknown_type"
    WRONG_TOPIC = "wrong_topic"
    SUBJECT_MISMATCH = "subject_mismatch"
    INVALID_DATA = "invalid_data"
    SOURCE_NOT_ALLOWED = "source_not_allowed"
    INTERNAL_ERROR = "internal_error"


class InvalidMessage(ValueError):
    """A record that is not a valid message for its topic; `reason` is short and readable,
    `code` is the dead letter's stable `error_code`."""

    def __init__(self, reason: str, code: ErrorCode = ErrorCode.INVALID_ENVELOPE) -> None:
        self.reason = _cap(reason)
        self.code = code
        super().__init__(self.reason)


def clip(text: str, limit: int = 100) -> str:
    """`text`, cut to `limit` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cap(text: str) -> str:
    return clip(text, MAX_REASON_CHARS)
