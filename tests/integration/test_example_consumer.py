"""The sample consumer `examples/notification_consumer.py` on output-shaped messages."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example() -> ModuleType:
    path = ROOT / "examples" / "notification_consumer.py"
    spec = importlib.util.spec_from_file_location("notification_consumer_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses/typing look the module up by name
    spec.loader.exec_module(module)
    return module


def _contract_example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (ROOT / "contracts" / "examples" / f"{name}.json").read_text()
    )
    return document


def test_credit_low_and_exhausted_notify_once_per_id(
    example: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    low = _contract_example("credit-low")
    exhausted = _contract_example("credit-exhausted")
    notifier = example.Notifier()

    text = notifier.handle(low)
    assert text is not None
    assert "r0123456" in text
    assert "56.5 credits" in text and "below 60 credits" in text

    text = notifier.handle(exhausted)
    assert text is not None
    assert "-8 credits" in text
    for option in exhausted["data"]["options"]:
        assert example.OPTION_TEXT[option] in text

    # re-published with the same id (re-delivery, duplicate input): no second notification
    assert notifier.handle(json.loads(json.dumps(low))) is None
    assert notifier.handle(exhausted) is None
    assert len(notifier.sent) == 2
    assert capsys.readouterr().out.count("To r0123456") == 2


def test_other_types_are_ignored_and_memory_is_bounded(example: ModuleType) -> None:
    notifier = example.Notifier(remember=2)
    changed = _contract_example("balance-changed")
    assert notifier.handle(changed) is None
    for n in range(5):
        notifier.handle({**_contract_example("credit-low"), "id": f"id-{n}"})
    assert list(notifier.seen) == ["id-3", "id-4"]
    assert len(notifier.sent) == 5
