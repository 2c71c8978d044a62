"""What a dead letter holds of its original message, read back for a redrive: the payload, the
record key and headers, and when it was dead-lettered (`processing.outputs.dead_letter` writes
them)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from learning_account.wire import DEAD_LETTER_PAYLOAD_LIMIT, STRUCTURED_HEADERS


def utc_time(text: str) -> datetime:
    """An ISO 8601 date or time (``Z`` for UTC); without an offset it is UTC (ValueError if it
    is none)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def dead_letter_time(document: Mapping[str, Any], timestamp_ms: int | None) -> datetime | None:
    """When the dead letter was written: its ``time``, else its record time."""
    text = document.get("time")
    if isinstance(text, str):
        try:
            return utc_time(text)
        except ValueError:
            pass
    if timestamp_ms is not None and timestamp_ms >= 0:
        return datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    return None


def original_key(document: Mapping[str, Any]) -> bytes | None:
    """The original record key: ``data.key`` is text, or base64 when the key was not UTF-8.

    The service writes ``subject`` only when the key is UTF-8 text (``outputs.dead_letter``),
    so a ``data.key`` without a ``subject`` is base64.
    """
    key = document.get("data", {}).get("key")
    if key is None:
        return None
    if "subject" in document:
        return str(key).encode()
    try:
        return base64.b64decode(str(key), validate=True)
    except (binascii.Error, ValueError):
        return str(key).encode()


def original_headers(data: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The CloudEvents headers of a binary-mode original (``data.headers``), else the
    ``content-type`` of a structured-mode one."""
    headers = data.get("headers")
    if not isinstance(headers, dict):
        return list(STRUCTURED_HEADERS)
    return [(str(name), str(value).encode()) for name, value in headers.items()]


def original_payload(data: Mapping[str, Any]) -> tuple[bytes | None, str]:
    """The original message bytes, or None and why they cannot be re-published."""
    payload = data.get("payload")
    if not isinstance(payload, str):
        return None, "no payload"
    if data.get("payload_encoding") == "base64":
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return None, "payload is not valid base64"
    else:
        raw = payload.encode("utf-8")
    if data.get("payload_truncated") or len(raw) >= DEAD_LETTER_PAYLOAD_LIMIT:
        return None, "payload truncated at 64 KiB"
    if not raw:
        return None, "empty payload"
    return raw, ""
