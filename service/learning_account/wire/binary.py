"""The CloudEvents Kafka binding: structured mode (`content-type` `application/cloudevents+json`)
and binary mode (attributes as `ce_` headers, `data` alone as the record value)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Final

from learning_account.wire.errors import ErrorCode, InvalidMessage

#: The Kafka `content-type` header of a structured-mode CloudEvent (CloudEvents Kafka binding).
CLOUDEVENTS_MEDIA_TYPE: Final = "application/cloudevents+json"
CLOUDEVENTS_CONTENT_TYPE: Final = f"{CLOUDEVENTS_MEDIA_TYPE}; charset=UTF-8"
CONTENT_TYPE_HEADER: Final = "content-type"
#: The headers of a record that carries a structured-mode CloudEvent (every output, and inputs
#: sent by this project's tools).
STRUCTURED_HEADERS: Final = ((CONTENT_TYPE_HEADER, CLOUDEVENTS_CONTENT_TYPE.encode()),)
#: Binary mode: the attributes as headers with this prefix; `data` alone is the record value.
BINARY_HEADER_PREFIX: Final = "ce_"
BINARY_ATTRIBUTES: Final = ("specversion", "id", "source", "type", "subject", "time", "traceparent")


Headers = Sequence[tuple[str, bytes | None]]
"""A record's headers as the Kafka client reads them: names as text, values as bytes or null."""


def binary_attributes(headers: Headers) -> dict[str, str] | None:
    """The CloudEvents attributes of a binary-mode record, None for a structured one.

    Binary: a `ce_specversion` header and a `content-type` that is not
    `application/cloudevents…` (contracts.md, "Kafka binding"). Header values are bytes; one of
    the attributes that is not UTF-8 is an invalid envelope. A header without a value is absent.
    """
    if not headers:
        return None  # the common case, kept cheap: decode is on the hot path
    found = _present(headers)
    if not _is_binary(found):
        return None
    content_type = found.get(CONTENT_TYPE_HEADER, b"")
    attributes: dict[str, str] = {}
    for attribute in BINARY_ATTRIBUTES:
        raw = found.get(BINARY_HEADER_PREFIX + attribute)
        if raw is None:
            continue
        try:
            attributes[attribute] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessage(
                f"envelope invalid: header {BINARY_HEADER_PREFIX}{attribute} is not UTF-8"
            ) from None
    if content_type:
        try:
            attributes["datacontenttype"] = content_type.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessage("envelope invalid: header content-type is not UTF-8") from None
    return attributes


def binding_headers(headers: Headers) -> dict[str, str] | None:
    """A binary-mode record's `ce_` and `content-type` headers as text (those that are UTF-8),
    which its dead letter keeps so that a redrive re-publishes the event whole; else None."""
    if not _is_binary(_present(headers)):
        return None
    kept: dict[str, str] = {}
    for name, raw in headers:
        lowered = name.lower()
        if raw is None or not (
            lowered.startswith(BINARY_HEADER_PREFIX) or lowered == CONTENT_TYPE_HEADER
        ):
            continue
        try:
            name.encode("utf-8")  # a name that was not UTF-8 is kept surrogate-escaped: left out
            kept.setdefault(name, raw.decode("utf-8"))
        except UnicodeError:
            continue
    return kept


def _present(headers: Headers) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for name, raw in headers:
        if raw is not None:
            found.setdefault(name.lower(), raw)
    return found


def _is_binary(found: Mapping[str, bytes]) -> bool:
    content_type = found.get(CONTENT_TYPE_HEADER, b"")
    return f"{BINARY_HEADER_PREFIX}specversion" in found and not content_type.lower().startswith(
        b"application/cloudevents"
    )


def structured(attributes: Mapping[str, str], data: bytes) -> bytes:
    """The structured-mode message of a binary record: its attributes plus `data`, verbatim."""
    try:
        json.loads(data)  # one JSON value, nothing after it: safe to splice in as `data`
    except ValueError as exc:
        raise InvalidMessage(f"not JSON: {exc}", ErrorCode.NOT_JSON) from None
    envelope = json.dumps(dict(attributes), ensure_ascii=False).encode()
    return envelope[:-1] + b', "data": ' + data + b"}"
