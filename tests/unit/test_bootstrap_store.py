"""`build_service` with the in-memory store: the processor, the sweeper and the HTTP API are
served from it, and the service leaves its connection to the test that made it."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from learning_account.bootstrap import KafkaClients, build_service
from learning_account.entrypoints.service import Service
from learning_account.settings import Settings
from learning_account_dev import events as ev
from learning_account_dev.devstack import free_port
from learning_account_dev.memory_store import MemoryStore
from support.memory import Records


def no_kafka(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("no Kafka client is made in this test")


def memory_service(store: MemoryStore, **settings: Any) -> Service:
    # a Redis no one listens on: a service that connected its own store would fail here
    settings = {"redis_url": "redis://127.0.0.1:9", "redis_cluster": "auto", **settings}
    return build_service(
        Settings(**settings), store=store, kafka=KafkaClients(no_kafka, no_kafka, no_kafka)
    )


async def test_the_injected_store_is_the_one_the_processor_sweeper_and_http_api_use() -> None:
    store = MemoryStore()
    service = memory_service(store)
    assert service.store is store and service.processor.store is store
    assert service.sweeper.store is store and service.redis_store is None
    record = Records()
    report = await service.processor.process([record(event) for event in ev.mary_track("mary")])
    assert report.dead_lettered == 0 and "mary" in store.accounts
    transport = httpx.ASGITransport(app=service.http)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/accounts/mary")
        missing = await client.get("/accounts/nobody")
    assert response.status_code == 200
    assert (response.json()["student_id"], response.json()["balance"]) == ("mary", 200)
    assert missing.status_code == 404


async def test_the_service_neither_connects_nor_closes_an_injected_store(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="learning_account")
    store = MemoryStore()
    port = free_port()
    service = memory_service(store, http_host="127.0.0.1", http_port=port)
    await service.start_http()  # would ask the Redis of redis_url whether it is a cluster
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/health/live")).status_code == 200
    finally:
        await service.close()
    assert service.redis_store is None and await store.ping()
    assert not [r.getMessage() for r in caplog.records if "Redis" in r.getMessage()]
