"""The AsyncAPI 3.0 document: FastStream's, completed where FastStream 0.7 cannot say it.

FastStream generates the channels and operations from the wiring in `consumer.py`. It cannot
say that a Kafka record carries one CloudEvent (the batch subscriber makes the input an array),
which types each topic carries, what the record key is, that the value is a structured-mode
CloudEvent, or where the production Kafka is and how to log in to it. `complete()` adds those, so
that `GET /asyncapi.json` and `contracts/asyncapi.json` are one document, and its message schemas
are the JSON Schemas of `contracts/schemas/` (same models, same modes).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final

from faststream.kafka import KafkaBroker
from faststream.security import SASLScram512
from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from learning_account import wire
from learning_account.ops.contracts_export import schema_mode
from learning_account.settings import Settings

#: The Kafka of `deploy/k8s` (configmap.yaml): SASL_SSL with SCRAM-SHA-512.
PRODUCTION_KAFKA_BOOTSTRAP: Final = "kafka-bootstrap.kafka.svc.cluster.local:9093"
#: Kafka binding objects of AsyncAPI 3.0 (github.com/asyncapi/bindings, kafka 0.5.0).
KAFKA_BINDING_VERSION: Final = "0.5.0"

_SCHEMAS_REF: Final = "#/components/schemas/{model}"
_PRODUCTION_SECURITY: Final = SASLScram512(username="", password="", use_ssl=True)


class SpecificationBroker(KafkaBroker):
    """FastStream's Kafka broker as the source of the AsyncAPI document only: its subscriber and
    publishers declare the wiring, and starting or stopping it reaches no Kafka (the service's
    own clients do). A FastStream application is given it as its broker."""

    async def start(self) -> None:
        self.running = True

    async def stop(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        self.running = False


def complete(document: Mapping[str, Any]) -> dict[str, Any]:
    """FastStream's AsyncAPI document with the contract's messages, bindings and servers."""
    result = copy.deepcopy(dict(document))
    payloads, schemas = _event_schemas()
    servers = _servers()
    result["defaultContentType"] = wire.CLOUDEVENTS_MEDIA_TYPE
    result["servers"] = servers
    components = result.setdefault("components", {})
    components["schemas"] = schemas
    components["securitySchemes"] = _security_schemes()
    for channel in result["channels"].values():
        topic = channel["address"]
        channel["servers"] = [{"$ref": f"#/servers/{name}"} for name in servers]
        for reference in channel["messages"].values():
            message = components["messages"][reference["$ref"].rsplit("/", 1)[1]]
            _describe_record(message, topic, payloads)
    return result


def _describe_record(message: dict[str, Any], topic: str, payloads: dict[str, Any]) -> None:
    """One message is one record of `topic`: a CloudEvent of one of the topic's types."""
    types = [event_type for event_type in wire.EVENT_MODELS if wire.TYPE_TOPIC[event_type] == topic]
    if not types:
        raise ValueError(f"channel {topic!r} is not a topic of the contract (wire.TOPIC_TYPES)")
    refs = [payloads[event_type] for event_type in types]
    message["payload"] = refs[0] if len(refs) == 1 else {"oneOf": refs}
    message["contentType"] = wire.CLOUDEVENTS_MEDIA_TYPE
    message["summary"] = "One CloudEvent (structured mode) per record: " + ", ".join(
        wire.short_name(event_type) for event_type in types
    )
    binding = {"key": _key_schema(topic), "bindingVersion": KAFKA_BINDING_VERSION}
    message["bindings"] = {"kafka": binding}
    # FastStream assumes a correlation_id header; the service neither reads nor writes one.
    message.pop("correlationId", None)


def _key_schema(topic: str) -> dict[str, Any]:
    if topic == wire.DEAD_LETTER_TOPIC:
        return {
            "type": "string",
            "description": "The dead-lettered record's own key, unchanged (none if it had none)",
        }
    schema = TypeAdapter(wire.StudentId).json_schema()
    schema["description"] = "The student id (UTF-8): one student's events stay in order"
    return schema


def _event_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """A `$ref` per event type, and the schemas they point to (contracts/schemas/, inlined)."""
    keys = [(model, schema_mode(event_type)) for event_type, model in wire.EVENT_MODELS.items()]
    refs, definitions = models_json_schema(keys, ref_template=_SCHEMAS_REF)
    payloads = {
        event_type: refs[(model, schema_mode(event_type))]
        for event_type, model in wire.EVENT_MODELS.items()
    }
    return payloads, definitions["$defs"]


def _servers() -> dict[str, Any]:
    development = Settings.model_fields["kafka_bootstrap_servers"].default
    return {
        "development": {
            "host": development,
            "protocol": "kafka",
            "description": "The local stack of `learning-account dev` (PLAINTEXT)",
        },
        "production": {
            "host": PRODUCTION_KAFKA_BOOTSTRAP,
            "protocol": "kafka-secure",
            "description": (
                "The Kafka of deploy/k8s: TLS (LA_KAFKA_SECURITY_PROTOCOL=SASL_SSL) and "
                "SCRAM-SHA-512 (LA_KAFKA_SASL_MECHANISM, _USERNAME, _PASSWORD)"
            ),
            "security": [
                {"$ref": f"#/components/securitySchemes/{name}"}
                for requirement in _PRODUCTION_SECURITY.get_requirement()
                for name in requirement
            ],
        },
    }


def _security_schemes() -> dict[str, Any]:
    schemes: dict[str, Any] = {}
    for name, scheme in _PRODUCTION_SECURITY.get_schema().items():
        schemes[name] = {
            **scheme,
            "description": "SASL/SCRAM-SHA-512 over TLS",
        }
    return schemes
