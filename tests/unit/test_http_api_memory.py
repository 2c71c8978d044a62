"""The read API served from the in-memory store, with accounts written by the Processor."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest

from learning_account.domain.model import Account, Policy
from learning_account.entrypoints.http_api import create_http_app
from learning_account.observability.metrics import Metrics
from learning_account.processing.pipeline import Processor
from learning_account_dev import events as ev
from learning_account_dev.memory_store import MemoryStore
from support.memory import Records


async def ready() -> bool:
    return True


def client_for(store: MemoryStore) -> httpx.AsyncClient:
    app = create_http_app(store, ready=ready, metrics=Metrics(), today=lambda: date(2019, 10, 1))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def applied(store: MemoryStore, events: list[dict[str, Any]]) -> None:
    record = Records()
    report = await Processor(store, Policy()).process([record(event) for event in events])
    assert report.dead_lettered == 0


@pytest.fixture
async def mary() -> AsyncIterator[tuple[MemoryStore, httpx.AsyncClient]]:
    store = MemoryStore()
    await applied(store, ev.mary_track("mary"))
    async with client_for(store) as client:
        yield store, client


async def test_the_balance_of_mary_after_three_years(
    mary: tuple[MemoryStore, httpx.AsyncClient],
) -> None:
    _, client = mary
    response = await client.get("/accounts/mary")
    assert response.status_code == 200
    account = response.json()
    assert (account["student_id"], account["balance"], account["bonus_granted"]) == (
        "mary",
        200,
        60,
    )
    assert account["as_of_academic_year"] == "2019-2020"


async def test_the_statement_of_mary_is_the_seed_table(
    mary: tuple[MemoryStore, httpx.AsyncClient],
) -> None:
    _, client = mary
    years = (await client.get("/accounts/mary/statement")).json()["years"]
    table = [(y["academic_year"], y["start"], y["invested"], y["balance"]) for y in years]
    assert table == [
        ("2016-2017", 140, -60, 200),
        ("2017-2018", 200, -60, 200),
        ("2018-2019", 200, -60, 200),
    ]


async def test_a_projection_answers_and_writes_nothing(
    mary: tuple[MemoryStore, httpx.AsyncClient],
) -> None:
    store, client = mary
    before = (copy.deepcopy(store.accounts), dict(store.outputs), dict(store.held))
    registration = ev.registration("mary", 2019, {"M1": 60}, kind="master")
    body = {"events": [{"type": registration["type"], "data": registration["data"]}]}
    response = await client.post("/accounts/mary/projection", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["balance"], answer["outcomes"][0]["previous_balance"]) == (140, 200)
    assert (store.accounts, store.outputs, store.held) == before


async def test_an_unknown_student_is_404_and_one_known_only_by_a_degree_too() -> None:
    store = MemoryStore()
    await applied(store, [ev.degree("grad", 2016, "master")])
    async with client_for(store) as client:
        for path in ("/accounts/nobody", "/accounts/grad", "/accounts/grad/statement"):
            response = await client.get(path)
            assert response.status_code == 404
            assert "error" in response.json()


async def test_a_store_that_fails_is_503() -> None:
    class Unreachable(MemoryStore):
        async def get(self, student_id: str, *, with_units: bool = False) -> Account | None:
            raise ConnectionRefusedError("the store is gone")

    async with client_for(Unreachable()) as client:
        response = await client.get("/accounts/mary")
        assert (response.status_code, set(response.json())) == (503, {"error"})
