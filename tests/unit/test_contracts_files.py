"""The checked-in `contracts/` directory is generated from the wire models and stays valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learning_account import wire
from learning_account.contracts_export import render_contracts, write_contracts

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
REGENERATE = "run `python -m learning_account.contracts_export` from the repository root"
EXAMPLES = sorted((CONTRACTS / "examples").glob("*.json"))


def test_checked_in_contracts_match_the_models() -> None:
    rendered = render_contracts()

    for relative, content in rendered.items():
        path = CONTRACTS / relative
        assert path.is_file(), f"{relative} is missing: {REGENERATE}"
        assert path.read_text(encoding="utf-8") == content, f"{relative} is stale: {REGENERATE}"
    checked_in = {
        path.relative_to(CONTRACTS).as_posix()
        for folder in ("schemas", "examples")
        for path in (CONTRACTS / folder).glob("*.json")
    }
    assert checked_in <= set(rendered), f"stale files {checked_in - set(rendered)}: {REGENERATE}"


def test_every_event_type_has_a_schema_and_an_example() -> None:
    rendered = render_contracts()

    for event_type in wire.EVENT_MODELS:
        name = wire.short_name(event_type)
        assert f"schemas/{name}.schema.json" in rendered
        assert f"examples/{name}.json" in rendered


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_every_example_decodes_on_its_topic(path: Path) -> None:
    value = path.read_bytes()
    event_type = json.loads(value)["type"]

    decoded = decode_example(event_type, value)

    assert wire.short_name(decoded.type) == path.stem
    assert decoded.source and decoded.id


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_every_example_validates_with_its_model(path: Path) -> None:
    message = json.loads(path.read_bytes())

    model = wire.EVENT_MODELS[message["type"]].model_validate_json(path.read_bytes())

    assert json.loads(model.model_dump_json(exclude_unset=True)) == message


def test_examples_exist_for_inputs_and_outputs() -> None:
    assert {path.stem for path in EXAMPLES} == {
        wire.short_name(event_type) for event_type in wire.EVENT_MODELS
    }


def test_schemas_describe_the_whole_envelope() -> None:
    for event_type in wire.EVENT_MODELS:
        path = CONTRACTS / "schemas" / f"{wire.short_name(event_type)}.schema.json"
        schema = json.loads(path.read_text(encoding="utf-8"))
        assert schema["title"] == event_type
        assert schema["x-topic"] == wire.TYPE_TOPIC[event_type]
        assert {"specversion", "id", "source", "type", "subject", "data"} <= set(
            schema["properties"]
        )
        assert {"specversion", "id", "source", "type", "data"} <= set(schema["required"])


def test_write_contracts_is_deterministic_and_removes_stale_files(tmp_path: Path) -> None:
    stale = tmp_path / "schemas" / "renamed-event.schema.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}\n", encoding="utf-8")

    first = write_contracts(tmp_path)
    contents = {path: path.read_bytes() for path in first}
    second = write_contracts(tmp_path)

    assert not stale.exists()
    assert first == second
    assert {path: path.read_bytes() for path in second} == contents
    assert all(content.endswith(b"}\n") for content in contents.values())


def decode_example(event_type: str, value: bytes) -> wire.DecodedEvent:
    return wire.decode(wire.TYPE_TOPIC[event_type], value, b"r0123456")
