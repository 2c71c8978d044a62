"""The checked-in `contracts/` directory is generated from the wire models and stays valid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from learning_account import wire
from learning_account.ops.contracts_export import ASYNCAPI_PATH, render_contracts, write_contracts
from learning_account.settings import Settings

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
REGENERATE = "run `python -m learning_account.ops.contracts_export` from the repository root"
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


# --- the AsyncAPI document ------------------------------------------------------------------


def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((CONTRACTS / ASYNCAPI_PATH).read_text(encoding="utf-8"))
    return document


def channel_message(document: dict[str, Any], topic: str) -> dict[str, Any]:
    (channel,) = (c for c in document["channels"].values() if c["address"] == topic)
    (reference,) = channel["messages"].values()
    message: dict[str, Any] = document["components"]["messages"][reference["$ref"].split("/")[-1]]
    return message


def payload_types(document: dict[str, Any], payload: dict[str, Any]) -> list[str]:
    """The CloudEvent `type` each alternative of a message payload admits."""
    schemas = document["components"]["schemas"]
    names = [alternative["$ref"].split("/")[-1] for alternative in payload.get("oneOf", [payload])]
    return [schemas[name]["properties"]["type"]["const"] for name in names]


def test_asyncapi_describes_one_cloudevent_per_record_and_only_its_topics_types() -> None:
    document = asyncapi()
    topics = {channel["address"] for channel in document["channels"].values()}

    assert topics == set(wire.INPUT_TOPICS) | set(wire.OUTPUT_TOPICS)
    for topic in topics:
        message = channel_message(document, topic)
        assert "items" not in message["payload"] and message["payload"].get("type") != "array"
        assert sorted(payload_types(document, message["payload"])) == sorted(
            wire.TOPIC_TYPES[topic]
        )
        assert message["contentType"] == "application/cloudevents+json"


def test_asyncapi_message_schemas_are_the_published_json_schemas() -> None:
    document = asyncapi()
    schemas = document["components"]["schemas"]

    for event_type, model in wire.EVENT_MODELS.items():
        published = json.loads(
            (CONTRACTS / "schemas" / f"{wire.short_name(event_type)}.schema.json").read_text()
        )
        in_asyncapi = schemas[model.__name__]
        assert in_asyncapi["required"] == published["required"], event_type
        assert in_asyncapi["properties"].keys() == published["properties"].keys(), event_type


def test_asyncapi_gives_the_record_key_as_the_student_id() -> None:
    document = asyncapi()

    for topic in (*wire.INPUT_TOPICS, *wire.OUTPUT_TOPICS):
        binding = channel_message(document, topic)["bindings"]["kafka"]
        assert binding["key"]["type"] == "string"
        if topic != wire.DEAD_LETTER_TOPIC:  # a dead letter keeps its record's key
            assert binding["key"]["pattern"] == wire.STUDENT_ID_PATTERN


def test_asyncapi_production_server_is_the_kafka_of_deploy_k8s() -> None:
    configmap = yaml.safe_load(
        (CONTRACTS.parent / "deploy" / "k8s" / "base" / "configmap.yaml").read_text()
    )["data"]
    document = asyncapi()
    production = document["servers"]["production"]
    (security,) = production["security"]
    scheme = document["components"]["securitySchemes"][security["$ref"].split("/")[-1]]

    assert configmap["LA_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert configmap["LA_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert production["host"] == configmap["LA_KAFKA_BOOTSTRAP_SERVERS"]
    assert production["protocol"] == "kafka-secure"  # TLS
    assert scheme["type"] == "scramSha512"
    development = Settings.model_fields["kafka_bootstrap_servers"].default
    assert document["servers"]["development"]["host"] == development
