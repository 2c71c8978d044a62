"""Both readers of an input message side by side: the fast one (`wire.fast`) and the models.

`decode` tries the fast reader and leaves what it refuses to the models, so the two agree when
the fast reader accepts only what the models accept, read into the same command and content.
`both_readers_checked` checks exactly that on every message a test decodes.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from learning_account.processing.commands import to_command
from learning_account.wire import DecodedEvent, InvalidMessage, canonical_content, decode
from learning_account.wire.fast import FastEvent, read_input
from learning_account.wire.topics import INPUT_TYPES

Outcome = tuple[Any, ...]

# the module, which `wire.decode` the function hides
decoding = importlib.import_module("learning_account.wire.decode")


def reference_decode(*args: Any, **kwargs: Any) -> DecodedEvent:
    """`decode` with the models alone."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decoding, "read_input", lambda message, latest: None)
        return decode(*args, **kwargs)


def outcome(decoded: DecodedEvent) -> Outcome:
    """All the pipeline takes from a decoded input."""
    return (
        decoded.topic,
        decoded.key,
        decoded.source,
        decoded.id,
        decoded.type,
        decoded.subject,
        to_command(decoded),
        canonical_content(decoded),
    )


def verdict(reader: Any, *args: Any, **kwargs: Any) -> Outcome:
    """What `reader` (`decode` or `reference_decode`) makes of a record, or its refusal."""
    try:
        decoded = reader(*args, **kwargs)
    except InvalidMessage as error:
        return ("invalid", error.reason, error.code)
    try:
        return ("valid", *outcome(decoded))
    except InvalidMessage as error:  # to_command refuses an output event
        return ("not an input", error.reason, error.code)


class Tally:
    """How many messages each reader accepted, of those a test decoded."""

    def __init__(self) -> None:
        self.fast = 0
        self.models_only: list[bytes] = []


def checked_reader(tally: Tally) -> Any:
    def read(message: bytes, latest: int) -> FastEvent | None:
        fast = read_input(message, latest)
        try:
            model = decoding._validate(message, latest)
        except ValidationError:
            model = None
        if fast is None:
            if model is not None and model.type in INPUT_TYPES:
                tally.models_only.append(message)
            return None
        assert model is not None, f"the fast reader accepts what the models refuse: {message!r}"
        by_models = DecodedEvent("", None, event=model)
        assert outcome(DecodedEvent("", None, fast=fast)) == outcome(by_models), message
        tally.fast += 1
        return fast

    return read


@pytest.fixture
def both_readers_checked(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tally]:
    """Every message decoded in the test is read by both; the fast reader must agree with the
    models on what it accepts, and accept every input message the models accept."""
    tally = Tally()
    monkeypatch.setattr(decoding, "read_input", checked_reader(tally))
    yield tally
    assert not tally.models_only, f"left to the models: {tally.models_only[:3]}"
