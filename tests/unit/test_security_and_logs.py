"""Security settings reach the clients; logs carry ids and counts, never payloads."""

from __future__ import annotations

import logging

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection

from learning_account.adapters.redis_connect import redis_client
from learning_account.adapters.redis_store import RedisStore
from learning_account.bootstrap import create_broker
from learning_account.domain.model import Policy
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account_dev import events as ev
from support.settings import from_env as settings


def test_plaintext_is_the_default() -> None:
    broker = create_broker(settings())
    assert broker._connection_kwargs.get("security_protocol", "PLAINTEXT") == "PLAINTEXT"


@pytest.mark.parametrize(
    ("protocol", "mechanism", "expected_mechanism"),
    [
        ("SASL_SSL", "SCRAM-SHA-512", "SCRAM-SHA-512"),
        ("SASL_SSL", "PLAIN", "PLAIN"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256", "SCRAM-SHA-256"),
    ],
)
def test_sasl_settings_reach_the_kafka_clients(
    protocol: str, mechanism: str, expected_mechanism: str
) -> None:
    broker = create_broker(
        settings(
            KAFKA_SECURITY_PROTOCOL=protocol,
            KAFKA_SASL_MECHANISM=mechanism,
            KAFKA_SASL_USERNAME="svc-learning-account",
            KAFKA_SASL_PASSWORD="s3cret",
        )
    )
    options = broker._connection_kwargs
    assert options["security_protocol"] == protocol
    assert options["sasl_mechanism"] == expected_mechanism
    assert options["sasl_plain_username"] == "svc-learning-account"
    assert options["sasl_plain_password"] == "s3cret"
    assert (options.get("ssl_context") is not None) == protocol.endswith("SSL")


def test_ssl_without_sasl_uses_tls() -> None:
    options = create_broker(settings(KAFKA_SECURITY_PROTOCOL="SSL"))._connection_kwargs
    assert options["security_protocol"] == "SSL"
    assert options["ssl_context"] is not None


def test_secrets_are_not_in_the_settings_repr() -> None:
    text = repr(settings(KAFKA_SASL_PASSWORD="s3cret", HTTP_TOKEN="t0ken"))
    assert "s3cret" not in text and "t0ken" not in text


def test_redis_tls_and_acl_come_from_the_url() -> None:
    client = redis_client("rediss://svc:pa55@redis.example:6380/2", cluster=False)
    options = client.connection_pool.connection_kwargs
    assert (options["username"], options["password"], options["db"]) == ("svc", "pa55", 2)
    assert issubclass(client.connection_pool.connection_class, SSLConnection)


async def test_logs_carry_ids_and_never_payloads(
    redis_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "PAYLOAD-MARKER-4711"
    good = ev.registration("logged", 2016, {secret: 6})
    bad = b'{"specversion": "1.0", "note": "' + secret.encode() + b'"'
    records = [
        InputRecord(ev.topic_of(good), 0, 0, b"logged", ev.to_bytes(good), 1),
        InputRecord(ev.topic_of(good), 0, 1, b"logged", bad, 2),
    ]
    with caplog.at_level(logging.DEBUG, logger="learning_account"):
        report = await Processor(RedisStore(redis_client), Policy()).process(records)
    assert report.dead_lettered == 1
    assert any(getattr(r, "event_id", None) == good["id"] for r in caplog.records)
    for record in caplog.records:
        assert secret not in record.getMessage()
        assert secret not in str(vars(record))
