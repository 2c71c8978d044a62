"""librdkafka's fetched records as the pipeline reads them: the live consumer and `rebuild` read
every record through `input_record`, so both see the same headers and the same record time."""

from __future__ import annotations

import logging
from operator import methodcaller
from typing import TYPE_CHECKING

from learning_account.processing.batch import InputRecord

if TYPE_CHECKING:
    from confluent_kafka import Message

log = logging.getLogger("learning_account")

_headers = methodcaller("headers")
"""`Message.headers()`, called so that its result is always checked: for a header name that is
not UTF-8, confluent-kafka returns the list with a UnicodeDecodeError still set (a call in
specialised bytecode may not notice it) and a later call gives a list holding a null name."""


def input_record(message: Message) -> InputRecord:
    """A fetched record as the pipeline reads it.

    confluent-kafka decodes header names as strict UTF-8: a record with a name that is not is
    read without its headers (such a name is never a CloudEvents one; a binary-mode CloudEvent
    with one is dead-lettered, its value kept). Header values are bytes as sent, None for a null
    one. A record without a timestamp has None.
    """
    kind, timestamp = message.timestamp()
    try:
        headers = _headers(message)
    except (SystemError, UnicodeError) as error:
        if isinstance(error, SystemError) and not isinstance(error.__cause__, UnicodeError):
            raise
        log.warning(
            "%s/%s offset %s: a header name is not UTF-8, read without headers",
            message.topic(),
            message.partition(),
            message.offset(),
        )
        headers = None
    return InputRecord(
        message.topic() or "",
        message.partition() or 0,
        message.offset() or 0,
        message.key(),
        message.value(),
        timestamp if kind else None,
        tuple(headers) if headers else (),
    )
